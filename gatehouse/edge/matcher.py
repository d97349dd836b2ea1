"""Rules compiled for the hot path: first match wins, cheap with tens of thousands of rules.

Address-only rules (a CIDR or a list file and nothing else) go into a :class:`PrefixIndex`:
per prefix length, a dict from network number to the lowest rule position — one dict lookup
per prefix length in use, whatever the number of rules. The other rules are scanned in order,
but only those ranked before the best address match, which is where first-match could differ.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from gatehouse.edge.regex import any_of, utf8
from gatehouse.edge.rules import Range, Rule
from gatehouse.edge.visitor import IPAddress, Visitor
from gatehouse.turns import run_in_turns

# (country, asn) of an address; either may be unknown
GeoLookup = Callable[[IPAddress], tuple[str | None, int | None]]


class PrefixIndex:
    """Networks → the lowest position any of them was added with; ``lookup(ip)`` answers the
    lowest position among the networks that contain ``ip``."""

    def __init__(self) -> None:
        self._tables: dict[tuple[int, int], dict[int, int]] = {}
        self._v4: tuple[tuple[int, dict[int, int]], ...] = ()
        self._v6: tuple[tuple[int, dict[int, int]], ...] = ()

    def add_many(self, nets: Iterable[Range], position: int) -> None:
        """Add ranges (Prefixes, or a list file's plain tuples) at ``position``."""
        tables = self._tables
        grew = False
        for version, key, shift in nets:  # key: the network number, its host bits shifted away
            table = tables.get((version, shift))
            if table is None:
                table = tables[(version, shift)] = {}
                grew = True
            if table.get(key, position + 1) > position:
                table[key] = position
        if grew:  # the lookup's per-length lists change only with a new prefix length
            self._v4 = tuple((s, t) for (v, s), t in sorted(tables.items()) if v == 4)
            self._v6 = tuple((s, t) for (v, s), t in sorted(tables.items()) if v == 6)

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables.values())

    def lookup(self, ip: IPAddress) -> int | None:
        n = int(ip)
        best: int | None = None
        for shift, table in self._v4 if isinstance(ip, ipaddress.IPv4Address) else self._v6:
            found = table.get(n >> shift)
            if found is not None and (best is None or found < best):
                best = found
        return best


def _parts(nets: list[Range], size: int = 512) -> Iterator[list[Range]]:
    """A list file's ranges 512 at a time (100,000 take ~50 ms to index)."""
    if len(nets) <= size:
        yield nets
        return
    for start in range(0, len(nets), size):
        yield nets[start:start + size]


class RuleSet:
    """An immutable, compiled, ordered rule list; build a new one to change anything."""

    def __init__(self, rules: Sequence[Rule], lists: Mapping[str, Sequence[Range]]) -> None:
        for _ in self._build(rules, lists):
            pass

    @classmethod
    async def compile(cls, rules: Sequence[Rule], lists: Mapping[str, Sequence[Range]], *,
                      turn_seconds: float | None = None) -> RuleSet:
        """The same rule set, built on the running loop in turns (:mod:`gatehouse.turns`):
        10,000 rules are ~75 ms of Python. In a thread they held the GIL in 5-ms turns and the
        requests around a rule change waited 50-90 ms; in 2-ms turns here, ~10 ms at the p99;
        in 0.5-ms turns, no more than with no change (bench/tail.py --rule-changes)."""
        built = cls.__new__(cls)
        await run_in_turns(built._build(rules, lists), turn_seconds)
        return built

    def _build(self, rules: Sequence[Rule], lists: Mapping[str, Sequence[Range]]) -> Iterator[None]:
        """Build this rule set, yielding after each rule (where it may pause)."""
        self.rules = tuple(rules)
        self.web = PrefixIndex()   # every address-only rule
        # the same without challenge rules (API clients skip them): the same index when no
        # address-only rule challenges (10,000 deny rules: 0.3 MB less a worker)
        self.api = self.web if not any(r.by_address_only and r.action == "challenge"
                                       for r in self.rules) else PrefixIndex()
        self.scan: list[tuple[int, Rule, PrefixIndex | None]] = []
        for position, rule in enumerate(self.rules):
            nets: list[Range] = [*rule.cidrs, *lists.get(rule.list_file, ())] \
                if rule.list_file else list(rule.cidrs)
            if rule.by_address_only:
                for part in _parts(nets):
                    self.web.add_many(part, position)
                    if self.api is not self.web and rule.action != "challenge":
                        self.api.add_many(part, position)
                    yield
                continue
            own = None
            if nets:
                own = PrefixIndex()
                for part in _parts(nets):
                    own.add_many(part, position)
                    yield
            self.scan.append((position, rule, own))
            yield
        self.needs_geo = any(rule.needs_geo for rule in self.rules)
        self.challenges = any(rule.action == "challenge" for rule in self.rules)
        # Most visitors match none of the path / user-agent regexes. One search of the union of
        # each kind tells whether any could; the rules whose regex cannot match are then left
        # out of the scan altogether (4 scan lists, by which unions found something).
        self.path_any = any_of([r.path for _, r, _ in self.scan if r.path is not None])
        yield  # each union is compiled by RE2: ~1 ms for 50 regexes
        self.ua_any = any_of([r.user_agent for _, r, _ in self.scan if r.user_agent is not None])
        yield
        self.scans = {
            (path_hit, ua_hit): [(pos, r, own) for pos, r, own in self.scan
                                 if (path_hit or r.path is None or self.path_any is None)
                                 and (ua_hit or r.user_agent is None or self.ua_any is None)]
            for path_hit in (False, True) for ua_hit in (False, True)}

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, visitor: Visitor, geo: GeoLookup | None = None) -> Rule | None:
        """The first rule that matches; challenge rules never match API clients."""
        api = visitor.api_client
        best = (self.api if api else self.web).lookup(visitor.ip)
        if self.scan:
            path, ua = utf8(visitor.path), utf8(visitor.headers.get("user-agent", ""))
            path_hit = self.path_any is None or self.path_any.found(path)
            ua_hit = self.ua_any is None or self.ua_any.found(ua)
            located: tuple[str | None, int | None] | None = None
            for position, rule, own in self.scans[(path_hit, ua_hit)]:
                if best is not None and position >= best:
                    break
                if api and rule.action == "challenge":
                    continue
                if own is not None and own.lookup(visitor.ip) is None:
                    continue
                if rule.path is not None and not rule.path.found(path):
                    continue
                if rule.user_agent is not None and not rule.user_agent.found(ua):
                    continue
                if rule.needs_geo:
                    if located is None:
                        located = geo(visitor.ip) if geo is not None else (None, None)
                    if rule.countries and located[0] not in rule.countries:
                        continue
                    if rule.asns and located[1] not in rule.asns:
                        continue
                return rule
        return self.rules[best] if best is not None else None
