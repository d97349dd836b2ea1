"""Country and ASN of an address from local MaxMind-format databases (``maxminddb``).

Reads GeoLite2/GeoIP2 Country and ASN files, and the common free variants (DB-IP, IPinfo's
``country_code`` / ``asn: "AS64500"``). The files are memory-mapped; a lookup is a few µs and
is made only when a country or ASN rule is reached."""

from __future__ import annotations

from typing import Any

from gatehouse.edge.visitor import IPAddress


class Geo:
    def __init__(self, country_db: str | None, asn_db: str | None) -> None:
        import maxminddb

        self._country = maxminddb.open_database(country_db) if country_db else None
        self._asn = (self._country if asn_db == country_db else
                     maxminddb.open_database(asn_db)) if asn_db else self._country

    def __call__(self, ip: IPAddress) -> tuple[str | None, int | None]:
        record = self._country.get(ip) if self._country is not None else None
        other = record if self._asn is self._country else \
            self._asn.get(ip) if self._asn is not None else None
        return _country(record), _asn(other)

    def close(self) -> None:
        for db in {id(d): d for d in (self._country, self._asn) if d is not None}.values():
            db.close()


def _country(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    for key in ("country", "registered_country"):
        found = record.get(key)
        if isinstance(found, dict) and isinstance(found.get("iso_code"), str):
            return str(found["iso_code"]).upper()
    code = record.get("country_code")
    return code.upper() if isinstance(code, str) else None


def _asn(record: Any) -> int | None:
    if not isinstance(record, dict):
        return None
    number = record.get("autonomous_system_number")
    if isinstance(number, int):
        return number
    text = record.get("asn")
    if isinstance(text, str) and text.upper().removeprefix("AS").isdigit():
        return int(text.upper().removeprefix("AS"))
    return None
