"""What a scenario was asked to do and what it found: options, phases, the report."""

from __future__ import annotations

from dataclasses import dataclass, field

from topologies.reach import describe_pairs

__all__ = ["Phase", "Report", "ScenarioOptions"]


@dataclass(frozen=True)
class ScenarioOptions:
    """What `synod emulate` was asked to do."""

    topo: str = "cloudedge"
    sites: int = 3
    hosts_per_site: int = 2
    switches_per_site: int = 1
    wan_delay_ms: float = 20.0
    wan_rate_mbit: float = 100.0
    wan_loss_pct: float = 0.0
    cut_site: str = "edge1"
    of_port: int = 0  # 0: pick a free port
    verbose: bool = False
    controllers: str = "sdn"  # sdn: a node and a controller per site; single: one controller
    web: bool = False  # keep running with the web view live until Ctrl-C (docs/web.md)
    web_pause_s: float = 0.0  # before the cut and before the heal: time to watch the page


@dataclass
class Phase:
    """Reachability measured in one phase of the scenario."""

    name: str
    results: dict[tuple[str, str], bool]  # (src host, dst host) -> answered
    site_of_host: dict[str, str]

    @property
    def answered(self) -> int:
        return sum(self.results.values())

    def all_answered(self, what: str) -> tuple[str, bool]:
        """A check that every pair answered; when not, which did not (by site)."""
        missing = [p for p, ok in self.results.items() if not ok]
        if not missing:
            return what, True
        return (f"{what}: {len(missing)} of {len(self.results)} pairs did not answer: "
                f"{describe_pairs(missing, self.site_of_host, self.results)}"), False

    @property
    def loss_pct(self) -> float:
        return 100.0 * (1 - self.answered / len(self.results)) if self.results else 0.0

    def between(self, src_site: str, dst_site: str) -> tuple[int, int]:
        """(answered, total) for pings from hosts of src_site to hosts of dst_site."""
        pairs = [ok for (s, d), ok in self.results.items()
                 if self.site_of_host[s] == src_site and self.site_of_host[d] == dst_site]
        return sum(pairs), len(pairs)


@dataclass
class Report:
    """What happened, printable for people and checkable by tests."""

    title: str
    site_names: list[str]
    phases: list[Phase] = field(default_factory=list)
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)  # what took how long (benchmarks)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)

    def render(self) -> str:
        lines = [self.title, ""]
        width = max(len(s) for s in self.site_names) + 2
        for phase in self.phases:
            lines.append(f"{phase.name}: {phase.answered}/{len(phase.results)} pings answered, "
                         f"{phase.loss_pct:.0f}% loss")
            lines.append(" " * (width + 6) + "".join(s.rjust(width) for s in self.site_names))
            for src in self.site_names:
                cells = []
                for dst in self.site_names:
                    ok, total = phase.between(src, dst)
                    cells.append((f"{ok}/{total}" if total else "-").rjust(width))
                lines.append(f"  from {src.ljust(width)}" + "".join(cells))
            lines.append("")
        lines += [f"  {note}" for note in self.notes]
        if self.notes:
            lines.append("")
        for text, ok in self.checks:
            lines.append(f"  [{'ok' if ok else 'FAIL'}] {text}")
        lines.append("")
        lines.append("result: " + ("PASS" if self.passed else "FAIL"))
        return "\n".join(lines)
