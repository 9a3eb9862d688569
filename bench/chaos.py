"""Chaos soak: mixed traffic through a real ``switchyard serve`` in front of an upstream that
refuses connections, hangs, cuts streams, stalls, delays its first byte, answers 500 and 429, and
echoes the credential it was sent (in a JSON error, an in-band stream error and a plain-text 500).

    .venv/bin/python bench/chaos.py --duration 180                  # SQLite; writes its section of RESULTS.md
    .venv/bin/python bench/chaos.py --duration 60 --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/chaos.py --duration 30 --out /tmp/chaos.md

The engine is ``tests/e2e/chaos.py`` (the suite runs a short variant of it, ``tests/e2e/test_chaos.py``).
At the end it checks that the usage rows match the requests one for one (the clients that left
included, as 499), that no secret reached a client or the server log, that every failure was an
OpenAI-shaped 4xx/5xx or an in-band stream error and nothing hung past the client timeout, and
that the gateway's RSS grew less than 10 % from after the warm-up to the end. Exit code 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))  # the engine and the fake upstream live under tests/

from tests.e2e.chaos import ChaosConfig, ChaosReport, run_chaos  # noqa: E402

MARK = "<!-- chaos soak: written by bench/chaos.py -->"


def markdown(report: ChaosReport, command: str) -> str:
    cfg = report.config
    store = "PostgreSQL (a fresh database)" if cfg.postgres else "SQLite"
    lines = [
        "## Chaos soak",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `{command}`",
        f"- Gateway: `switchyard serve`, 1 worker, {store}; upstream timeout {cfg.upstream_timeout} s, "
        f"client timeout {cfg.client_timeout} s; {cfg.keys} client keys, chat on a credential from the config, "
        "embeddings on one from the vault",
        f"- Load: {cfg.concurrency} clients, {cfg.warmup:.0f} s warm-up then {cfg.duration:.0f} s "
        f"({report.elapsed_s:.0f} s in all), seed {cfg.seed}, fault rate {cfg.fault_rate}, "
        f"leave rate {cfg.leave_rate}",
        "",
        "| Figure | Value |",
        "|---|---|",
        f"| Requests (non-stream chat / stream chat / embeddings) | {report.requests:,} "
        f"({report.by_endpoint['chat']:,} / {report.by_endpoint['stream']:,} / "
        f"{report.by_endpoint['embeddings']:,}) |",
        f"| Answers: ok / 4xx-5xx / in-band stream error / client left | {report.verdicts['ok']:,} / "
        f"{report.verdicts['http-error']:,} / {report.verdicts['stream-error']:,} / {report.verdicts['left']:,} |",
        f"| Statuses the clients saw | {', '.join(f'{s}: {n:,}' for s, n in sorted(report.statuses.items()))} |",
        f"| Faults the upstream carried out, by kind | "
        f"{', '.join(f'{k}: {n:,}' for k, n in sorted(report.faults.items()) if k != 'none')} |",
        f"| Requests the upstream answered normally | {report.faults['none']:,} |",
        f"| Clients that left (wait / mid-stream / any moment) | {report.leaves['wait']:,} / "
        f"{report.leaves['mid-stream']:,} / {report.leaves['any']:,} |",
        f"| Upstream answers the gateway abandoned | {report.upstream_disconnects:,} |",
        f"| Usage rows (of which 499) | {report.rows:,} ({report.rows_499:,}) |",
        f"| Secrets seen (clients, admin status and metrics, server log) | {len(report.secrets_seen)} |",
        f"| Answers that carried an echoed secret, redacted (`[redacted]`) | {report.redacted:,} |",
        f"| Slowest answer, at the client / at the gateway (its access log) | {report.slowest_s:.2f} s / "
        f"{report.gateway_slowest_s:.2f} s |",
        f"| Gateway RSS after warm-up → end | {report.rss_start_mb:.1f} MB → {report.rss_end_mb:.1f} MB "
        f"({report.rss_growth:+.1%}) |",
        "",
        "| Check | Result |",
        "|---|---|",
    ]
    for check, problems in report.failures.items():
        lines.append(f"| {check} | {'PASS' if not problems else 'FAIL: ' + '; '.join(problems[:3])} |")
    lines += [
        "",
        "Result: " + ("**PASS**" if report.ok else "**FAIL**"),
        "",
        "- Faults are counted where the upstream carried them out: a pooled connection reset before a byte"
        " of the answer is retried once on a fresh one, so a request can meet its fault twice, and a"
        " request that never reached the upstream (a refused connect) meets none.",
        "- `refuse` closes the upstream's listener for 0.1 s: every request that needs a new connection"
        " meanwhile gets a 502, whatever it asked for.",
        "- A client that left while the gateway waited for the upstream or mid-stream must have a 499 row"
        " (unless, starved of CPU, it left after the answer could have come); one that left at any other"
        " moment may have a 499 row or the status of what was answered.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of measured traffic")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of traffic before the first RSS sample")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fault-rate", type=float, default=0.35, help="share of requests the upstream fails")
    ap.add_argument("--leave-rate", type=float, default=0.1, help="share of clients that hang up early")
    ap.add_argument("--keys", type=int, default=4, help="client keys the traffic is spread over")
    ap.add_argument("--upstream-timeout", type=float, default=2.0)
    ap.add_argument("--client-timeout", type=float, default=15.0)
    ap.add_argument("--postgres", default=None, metavar="URL",
                    help="a PostgreSQL server (postgresql+asyncpg://…/db): the store, in a fresh database")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--out", type=Path, default=None,
                    help="write the report here (default: its section of bench/RESULTS.md)")
    args = ap.parse_args(argv)
    cfg = ChaosConfig(duration=args.duration, warmup=args.warmup, concurrency=args.concurrency, seed=args.seed,
                      fault_rate=args.fault_rate, leave_rate=args.leave_rate, keys=args.keys,
                      upstream_timeout=args.upstream_timeout, client_timeout=args.client_timeout,
                      postgres=args.postgres, log_level=args.log_level)
    report = run_chaos(cfg)
    print(report.summary())
    command = ".venv/bin/python bench/chaos.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = markdown(report, command.rstrip())
    if args.out is not None:
        args.out.write_text(text)
    else:  # the last section of RESULTS.md (bench/run.py and bench/engines.py keep it)
        results = BENCH_DIR / "RESULTS.md"
        head = results.read_text().split(MARK)[0].rstrip() if results.exists() else ""
        results.write_text(f"{head}\n\n{MARK}\n\n{text}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
