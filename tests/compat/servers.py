"""Third-party OpenAI-compatible servers on 127.0.0.1, each from its own virtualenv that
``.ci/compat`` prepares: the LiteLLM proxy with ``mock_response`` models and llama-cpp-python's
server running a tiny random GGUF model made here. A server that cannot be started fails the
test that needs it (never a skip): the compatibility suite is run on purpose."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tests.support.procs import _wait_http as wait_http
from tests.support.procs import free_port, stop

# not GATEHOUSE_*: the gateway reads every such variable as its configuration
HOME = Path(os.environ.get("COMPAT_HOME",
                           Path.home() / ".cache" / "gatehouse-compat"))
HERE = Path(__file__).parent
START = 240  # seconds for a server to come up: LiteLLM took 77 s at load 16 on 2 cores


def venv_python(name: str) -> Path:
    python = HOME / name / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: run .ci/compat (it prepares the compatibility "
                    "suite's servers) before python -m pytest tests/compat", pytrace=False)
    return python


class Server:
    """A server process with its output in ``log``; ``kill()`` is a crash (SIGKILL)."""

    def __init__(self, name: str, tmp: Path, args: list[str], ready_path: str,
                 env: dict[str, str] | None = None, api_key: str = "unused") -> None:
        self.name = name
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"{name}-{self.port}.log"
        self.ready_url = self.url + ready_path
        self._start = ([arg.replace("{port}", str(self.port)) for arg in args],
                       {**os.environ, **(env or {})}, tmp)
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Started, not waited for: ``wait()`` (so several servers can start at once)."""
        args, env, cwd = self._start
        with self.log.open("ab") as out:
            return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=cwd)

    def wait(self) -> Server:
        wait_http(self.ready_url, self.proc, self.log, START)
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        """Start again on the same port (after ``kill()``)."""
        self.stop()
        self.proc = self._spawn()
        self.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)


# -- the LiteLLM proxy -----------------------------------------------------------------------

MOCK_ANSWER = "The gateway passed this mock answer on, word for word."
# the proxy refuses to start without one (or with a weak one)
MASTER_KEY = "sk-compat-" + secrets.token_hex(24)
# the model price list bundled in the package, not fetched from the internet at start. No
# DATABASE_URL: no prisma, no migrations; its telemetry sends nothing until told where to
LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def litellm_config(path: Path) -> Path:
    """Models answering ``MOCK_ANSWER`` without any provider behind them."""
    lines = ["model_list:", "  - model_name: mock", "    litellm_params:",
             "      model: openai/gpt-4o-mini", "      api_key: unused",
             f"      mock_response: {json.dumps(MOCK_ANSWER)}"]
    lines += ["litellm_settings:", "  drop_params: true",
              "general_settings:", f"  master_key: {MASTER_KEY}",
              "  disable_spend_logs: true"]
    path.write_text("\n".join(lines) + "\n")
    return path


def litellm(tmp: Path, name: str = "litellm") -> Server:
    python = venv_python("litellm-venv")
    config = litellm_config(tmp / "litellm.yaml")
    return Server(name, tmp, [str(python), "-m", "litellm.proxy.proxy_cli", "--config",
                              str(config), "--host", "127.0.0.1", "--port", "{port}",
                              "--num_workers", "1"],
                  "/health/liveliness", LITELLM_ENV, MASTER_KEY)


# -- llama-cpp-python's server with a tiny random model ---------------------------------------

CORPUS = ["The gateway counts every token of every request, streamed or not.",
          "hello world, how are you today? Fine, thanks: and you?",
          "def f(x):\n    return {k: v for k, v in x.items() if v}\n"]


def tiny_tokenizer(path: Path) -> Path:
    """A byte-level BPE ``tokenizer.json`` of a few hundred tokens, trained on ``CORPUS``: the
    model's vocabulary, and what the gateway counts its tokens with."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|bos|>", "<|eos|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


def tiny_model(tmp: Path) -> tuple[Path, Path]:
    """(tokenizer.json, model.gguf): the GGUF is written by tiny_gguf.py in the server's venv,
    which has the ``gguf`` package."""
    tokenizer = tiny_tokenizer(tmp / "tokenizer.json")
    model = tmp / "tiny.gguf"
    subprocess.run([str(venv_python("llama-venv")), str(HERE / "tiny_gguf.py"),
                    str(tokenizer), str(model)], check=True, timeout=120)
    return tokenizer, model


def llama_cpp(tmp: Path, model: Path, name: str = "llama") -> Server:
    python = venv_python("llama-venv")
    return Server(name, tmp, [str(python), "-m", "llama_cpp.server", "--model", str(model),
                              "--model_alias", "tiny", "--n_ctx", "512", "--n_threads", "1",
                              "--host", "127.0.0.1", "--port", "{port}"], "/v1/models")
