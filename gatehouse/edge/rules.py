"""Firewall rules: an action (allow, deny, challenge) and conditions that must all hold.

Conditions: ``cidr`` (one or several), ``list`` (a file of CIDRs, one a line, ``#``
comments), ``user_agent`` / ``path`` (regexes, searched in linear time by RE2: see
:mod:`gatehouse.edge.regex`), ``country`` / ``asn`` (looked up in
a local MaxMind-format database). Rules come from ``[[edge.rules]]`` and from the store
(``gatehouse rules add``); :mod:`gatehouse.edge.matcher` compiles them into one ordered set.
"""

from __future__ import annotations

import codecs
import io
import ipaddress
import logging
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

from gatehouse.edge.regex import Regex, RegexError

log = logging.getLogger("gatehouse.edge")
Action = Literal["allow", "deny", "challenge"]
ACTIONS: tuple[str, ...] = get_args(Action)
DIFFICULTY = (1, 32)  # leading zero bits a challenge rule may ask for
CONDITIONS = ("cidr", "list", "user_agent", "path", "country", "asn")
MAX_REGEX = 512
RULE_NAME_MAX = 64  # a rule's name (metrics, logs, Ray events)
NOTE_MAX = 256  # a stored rule's note
ASN_MAX = 4_294_967_295  # AS numbers are 32 bits (RFC 6793)
POSITION_MAX = 1_000_000  # where a stored rule goes; any place past the last is the last
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
NONE: frozenset[Any] = frozenset()  # Python makes a new one each time


class Prefix(NamedTuple):
    """An address range as rules and lists hold it: its IP version, its network number with
    the host bits shifted away (``key``) and how many host bits (``shift``) — what the
    matcher's index looks up, nothing more. As ipaddress networks, 10,000 rules' ranges held
    2.4 MB in every worker (an object, its ``__dict__`` and an address object each), and the
    index's keys 0.5 MB more; as these, ~0.9 MB with the keys shared. A list file of 100,000
    ranges is ~14 MB less."""

    version: int
    key: int
    shift: int

    @classmethod
    def of(cls, net: Network) -> Prefix:
        shift = net.max_prefixlen - net.prefixlen
        return cls(net.version, int(net.network_address) >> shift, shift)

    def __contains__(self, ip: object) -> bool:
        """Whether an address (an ipaddress object) is in the range."""
        return isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) \
            and ip.version == self.version and int(ip) >> self.shift == self.key

    def __str__(self) -> str:
        bits = 32 if self.version == 4 else 128
        return str(ipaddress.ip_network((self.key << self.shift, bits - self.shift)))


class RuleError(ValueError):
    """A rule that cannot be used, and why (shown to whoever wrote it). Messages about one
    field start with its name and a colon; ``param`` is that name."""

    @property
    def param(self) -> str | None:
        field, sep, _ = str(self).partition(":")
        return field if sep and field in (*CONDITIONS, "action", "difficulty", "name") else None


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    action: str
    # its name, or (a rule of the config without one) its place there: the label "config#N"
    # is made when used, not held (0.6 MB over 10,000 rules, less the numbers, 0.3)
    tag: str | int
    cidrs: tuple[Prefix, ...] = ()
    list_file: str | None = None
    user_agent: Regex | None = None
    path: Regex | None = None
    countries: frozenset[str] = NONE
    asns: frozenset[int] = NONE
    difficulty: int | None = None
    # not the rule as written: the listing takes it from the config or the store (keeping a
    # copy here cost 3.7 MB per worker over 10,000 rules)

    @property
    def label(self) -> str:
        """What names it in metrics, logs, Ray events and the listing."""
        return self.tag if isinstance(self.tag, str) else f"config#{self.tag}"

    @property
    def by_address_only(self) -> bool:
        """Only address conditions: such rules go into the prefix index, not the scan."""
        return bool(self.cidrs or self.list_file) and not (
            self.user_agent or self.path or self.countries or self.asns)

    @property
    def needs_geo(self) -> bool:
        return bool(self.countries or self.asns)


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    out = [str(v).strip() for v in items if str(v).strip()]
    if not out:
        raise RuleError(f"{what}: empty")
    return out


def _regex(value: Any, what: str) -> Regex | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_REGEX:
        raise RuleError(f"{what}: a regular expression of 1 to {MAX_REGEX} characters")
    try:
        return Regex.parse(value)
    except RegexError as exc:
        raise RuleError(f"{what}: {exc}") from None


def parse_network(text: str) -> Network:
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise RuleError(f"{text!r} is not an address or CIDR (e.g. 203.0.113.0/24)") from None
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None \
            and net.prefixlen >= 96:  # ::ffff:a.b.c.d/1xx is the IPv4 range clients come as
        net = ipaddress.ip_network(
            (net.network_address.ipv4_mapped, net.prefixlen - 96), strict=False)
    return net


def parse_rule(spec: Mapping[str, Any], label: str | int) -> Rule:
    """A rule from its written form (a ``[[edge.rules]]`` table or a store row), labelled by
    its name if it has one, else by ``label`` (a store row's id, or a place in the config)."""
    spec = {k: v for k, v in spec.items() if v is not None}
    action = spec.get("action")
    if action not in ACTIONS:
        raise RuleError(f"action: one of {', '.join(ACTIONS)}")
    if not any(k in spec for k in CONDITIONS):
        raise RuleError(f"a rule needs at least one condition: {', '.join(CONDITIONS)}")
    difficulty = spec.get("difficulty")
    if difficulty is not None and action != "challenge":
        raise RuleError("difficulty: only challenge rules have one")
    low, high = DIFFICULTY
    if difficulty is not None and (type(difficulty) is not int or not low <= difficulty <= high):
        raise RuleError(f"difficulty: a whole number from {low} to {high}")
    # rules without them share one empty set (216 bytes each: 4 MB over 10,000 address rules)
    countries = frozenset(c.upper() for c in _strings(spec.get("country"), "country")) or NONE
    for c in countries:
        if not re.fullmatch(r"[A-Z]{2}", c):
            raise RuleError(f"country: {c!r} is not a two-letter ISO code")
    try:
        asns = frozenset(int(str(a).upper().removeprefix("AS"))
                         for a in _strings(spec.get("asn"), "asn")) or NONE
    except ValueError:
        raise RuleError("asn: numbers such as 64500 or AS64500") from None
    if any(not 0 <= a <= ASN_MAX for a in asns):  # a larger one could not even be stored
        raise RuleError(f"asn: numbers from 0 to {ASN_MAX}")
    list_file = spec.get("list")
    if list_file is not None and (not isinstance(list_file, str) or not list_file
                                  or any(ord(c) < 32 or c == "\x7f" for c in list_file)):
        # a NUL is no path (every reload then failed, freezing the rules, and so did starts)
        raise RuleError("list: the path of a file of CIDRs (no control characters)")
    name = spec.get("name")
    written = _strings(spec.get("cidr"), "cidr")
    try:
        cidrs = tuple(Prefix.of(parse_network(c)) for c in written)
    except RuleError as exc:
        raise RuleError(f"cidr: {exc}") from None
    return Rule(action, str(name) if name else label, cidrs,
                list_file, _regex(spec.get("user_agent"), "user_agent"),
                _regex(spec.get("path"), "path"), countries, asns, difficulty)


def list_path(base_dir: Path, name: str) -> Path:
    """Where a rule's list file is: a relative name is taken from the config file's folder."""
    path = Path(name)
    return path if path.is_absolute() else base_dir / path


LIST_STEP = 256  # lines parsed between the points where a reader on the loop may pause
LIST_CHUNK = 1 << 18  # bytes read at a time: a file is never held whole
LINE_MAX = 4096  # characters; a longer run without a line break is no list line, and dropped


def check_list(path: Path) -> None:
    """RuleError unless ``path`` is a text file a rule's list can be read from: a missing
    file, a directory (or a FIFO, which would block the reader) or a binary file was stored,
    and every replica then logged that it cannot be read, on every look. The file is read a
    chunk at a time (a wrong file of gigabytes is not held whole)."""
    at, pending = 0, b""  # where in the file the bytes looked at next start; a character cut
    try:                  # at the end of the last chunk
        if not path.is_file():
            raise RuleError(
                f"list: {path} is a directory" if path.is_dir() else
                f"list: {path} is not a regular file" if path.exists() else
                f"list: {path} does not exist (a relative path is taken from the config "
                "file's folder)")
        with open(path, "rb") as handle:
            while True:
                data = handle.read(LIST_CHUNK)
                chunk, pending = pending + data, b""
                bad = chunk.find(b"\0")
                try:
                    chunk.decode("utf-8")
                except UnicodeDecodeError as exc:
                    if data and exc.reason == "unexpected end of data":  # cut by the chunk
                        pending = chunk[exc.start:]
                    elif bad < 0 or exc.start < bad:
                        bad = exc.start
                if bad >= 0:
                    raise RuleError(f"list: {path} is not a text file (byte {at + bad}): a "
                                    "list holds one address or CIDR a line")
                if not data:
                    return
                at += len(chunk) - len(pending)
    except OSError as exc:
        raise RuleError(f"list: cannot read {path}: {exc.strerror or type(exc).__name__}") \
            from None


# A list file's range: a Prefix's (version, key, shift) as a plain tuple. The collector stops
# tracking plain tuples of ints, not NamedTuples: as Prefixes, each full collection walked every
# range of a 100,000-line list again (~10 ms, a stall of every request of the worker).
Range = tuple[int, int, int]


def list_range(text: str) -> Range:
    """A list line's range. A dotted IPv4 address or range (the bulk of blocklists) is read
    without ipaddress — ~1 µs a line instead of ~7; 100,000 lines took 0.7 s of Python — and
    anything else goes through :func:`parse_network` (RuleError for what is not a range)."""
    addr, slash, bits = text.partition("/")
    try:
        packed = socket.inet_pton(socket.AF_INET, addr)  # exactly a.b.c.d, no leading zeros
    except (OSError, ValueError):
        return _range(Prefix.of(parse_network(text)))
    if not slash:
        return (4, int.from_bytes(packed, "big"), 0)
    if 0 < len(bits) <= 2 and bits.isascii() and bits.isdigit() and int(bits) <= 32:
        shift = 32 - int(bits)
        return (4, int.from_bytes(packed, "big") >> shift, shift)
    return _range(Prefix.of(parse_network(text)))


def _range(prefix: Prefix) -> Range:
    return (prefix.version, prefix.key, prefix.shift)


class ListParser:
    """A list file's ranges, from its bytes fed a chunk at a time (decoded as UTF-8, a bad
    byte replaced); lines that are not ranges are skipped and counted in one warning at the
    end. A serving worker reads the chunks in a thread and parses them on its loop in turns:
    in a thread, splitting and making the lines held the GIL against the requests."""

    def __init__(self, source: str | Path) -> None:
        self.source = source
        self.ranges: list[Range] = []
        self.bad = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._rest = ""  # the start of a line the next chunk ends

    def feed(self, data: bytes) -> Iterator[None]:
        """Parse a chunk (``b""`` at the end of the file), yielding every LIST_STEP lines
        (a reader on the event loop pauses there)."""
        text = self._rest + self._decoder.decode(data, not data)
        end = max(text.rfind("\n"), text.rfind("\r")) + 1 if data else len(text)
        self._rest = text[end:]
        if len(self._rest) > LINE_MAX:
            self._rest = ""
            self.bad += 1
        into, bad = self.ranges, 0
        # a line at a time: splitting 100,000 at once held the loop ~5 ms
        for number, line in enumerate(io.StringIO(text[:end], newline=None), 1):
            entry = line.partition("#")[0].strip()
            if entry:
                try:
                    into.append(list_range(entry.split()[0]))
                except RuleError:
                    bad += 1
            if number % LIST_STEP == 0:
                yield
        self.bad += bad

    def done(self) -> list[Range]:
        if self.bad:
            log.warning("list %s: %d line(s) are not addresses or CIDRs and were skipped",
                        self.source, self.bad)
        return self.ranges


def read_list(path: str | Path) -> list[Range]:
    """The CIDRs of a list file, read a chunk at a time."""
    parser = ListParser(path)
    with open(path, "rb") as handle:
        while True:
            data = handle.read(LIST_CHUNK)
            for _ in parser.feed(data):
                pass
            if not data:
                return parser.done()
