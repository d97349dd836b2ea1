"""TLS interception, against real TLS servers on 127.0.0.1 whose certificates come from CAs
made in the test: a private "inspection" root is caught; a chain up to a root in the trust
store passed in is not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatehouse.doctor.certs import TrustStore
from gatehouse.doctor.network import probe_host
from gatehouse.doctor.profiles import Endpoint
from tests.support.doctor import Issued, make_ca, make_leaf, run_doctor, tls_server


@pytest.fixture(scope="module")
def public_root() -> Issued:
    return make_ca("Test Public Root R1", "Test Trust Services")


@pytest.fixture(scope="module")
def inspection_root() -> Issued:
    return make_ca("Corporate SSL Inspection CA", "Zscaler Inc.")


@pytest.fixture
def trusted(public_root: Issued, tmp_path: Path) -> Path:
    path = tmp_path / "public-roots.pem"
    path.write_bytes(public_root.pem())
    return path


@pytest.fixture
def inspected_port(tmp_path: Path, inspection_root: Issued) -> Iterator[int]:
    # what an inspection proxy does: a leaf for the site, signed by its own root, root sent too
    with tls_server(tmp_path, make_leaf(inspection_root), inspection_root) as port:
        yield port


@pytest.fixture
def clean_port(tmp_path: Path, public_root: Issued) -> Iterator[int]:
    issuing = make_ca("Test Public Issuing CA 1", "Test Trust Services", issuer=public_root)
    with tls_server(tmp_path, make_leaf(issuing), issuing) as port:
        yield port


async def test_a_private_inspection_root_is_caught(inspected_port: int, trusted: Path) -> None:
    host = await probe_host(Endpoint("127.0.0.1", inspected_port, True),
                            TrustStore.from_pem_file(trusted), TrustStore("empty", []))
    assert host.reachable and host.tls_ms is not None and host.tcp_ms is not None
    assert host.chain is not None
    assert host.intercepted
    assert host.chain.private_root
    assert host.chain.top == "Corporate SSL Inspection CA"
    assert host.chain.product == "zscaler"
    assert host.chain.installed is False
    assert "private root" in host.chain.explanation
    assert "not trusted by this machine either" in host.chain.explanation


async def test_the_real_public_store_does_not_vouch_for_it(inspected_port: int) -> None:
    host = await probe_host(Endpoint("127.0.0.1", inspected_port, True), TrustStore.public())
    assert host.intercepted


async def test_an_inspection_root_installed_on_the_machine_is_named_so(
        inspected_port: int, trusted: Path, inspection_root: Issued) -> None:
    host = await probe_host(Endpoint("127.0.0.1", inspected_port, True),
                            TrustStore.from_pem_file(trusted),
                            TrustStore("this machine's store", [inspection_root.cert]))
    assert host.intercepted and host.chain is not None and host.chain.installed
    assert "installed on this machine" in host.chain.explanation


async def test_a_chain_up_to_a_trusted_root_is_not_flagged(clean_port: int, trusted: Path
                                                           ) -> None:
    host = await probe_host(Endpoint("127.0.0.1", clean_port, True),
                            TrustStore.from_pem_file(trusted))
    assert host.chain is not None
    assert not host.intercepted
    assert host.chain.public and host.chain.name_matches
    assert host.chain.issuer == "Test Public Issuing CA 1"
    assert host.chain.product is None


async def test_a_closed_port_fails_at_tcp(trusted: Path) -> None:
    from tests.support.procs import free_port

    host = await probe_host(Endpoint("127.0.0.1", free_port(), True),
                            TrustStore.from_pem_file(trusted))
    assert host.failed_step == "tcp" and not host.reachable


def test_doctor_reports_interception(inspected_port: int, trusted: Path) -> None:
    run = run_doctor(f"https://127.0.0.1:{inspected_port}", "--trust-store", str(trusted),
                     "--skip", "status")
    assert run.code == 21, run.stderr
    assert run.report["verdict"]["branch"] == "network_policy"
    assert run.report["verdict"]["outcome"] == "tls_interception"
    host = run.report["checks"]["network"]["hosts"][0]
    assert host["intercepted"] and host["chain"]["private_root"]
    assert "Corporate SSL Inspection CA" in run.report["verdict"]["headline"]
    # the API path through the same network fails verification the same way
    assert run.report["checks"]["api"]["calls"][0]["outcome"] == "tls_error"


def test_doctor_passes_a_trusted_chain(clean_port: int, trusted: Path) -> None:
    run = run_doctor(f"https://127.0.0.1:{clean_port}", "--trust-store", str(trusted),
                     "--skip", "status", "--skip", "api", "--skip", "web")
    assert run.code == 0, run.stderr
    host = run.report["checks"]["network"]["hosts"][0]
    assert host["reachable"] and not host["intercepted"]
    assert host["tls_verdict"].endswith("a public CA")
