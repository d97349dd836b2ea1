"""The edge stage: who is really asking (client address), firewall rules, abuse bans and the
1020 "Access denied" answer; the web path's human check plugs in as a :class:`Challenger`.

Modules: ``visitor`` (what a rule sees, the challenger interface), ``client`` (the address
behind trusted proxies), ``rules`` (compiled first-match rule set), ``bans`` / ``detector``
(timed bans in the state layer, offence counting), ``rays`` (Ray ID log), ``edge`` (the one
decision, ``Edge.screen``), ``stage`` / ``guard`` (the pipeline stage and the mount guard)."""
