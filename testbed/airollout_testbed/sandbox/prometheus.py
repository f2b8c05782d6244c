"""A real Prometheus for the sandbox: 1 s scrapes, targets discovered from files anyone can drop in.

File-based service discovery (``DIR/scrape-targets/*.json``) lets a test, the demo or a user add an
exporter without restarting or reconfiguring anything.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from airollout_testbed.sandbox import processes
from airollout_testbed.sandbox.tools import tool
from airollout_testbed.waiting import wait_for

NAME = "prometheus"


def scrape_targets_dir(directory: Path) -> Path:
    return directory / "scrape-targets"


def add_scrape_target(directory: Path, name: str, address: str, labels: dict[str, str] | None = None) -> Path:
    """Ask the sandbox Prometheus to scrape ``address`` (host:port, path /metrics) as job ``name``."""
    targets = scrape_targets_dir(directory)
    targets.mkdir(parents=True, exist_ok=True)
    path = targets / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [address], "labels": {"job": name, **(labels or {})}}]))
    tmp.replace(path)  # atomic: Prometheus never reads a half-written file
    return path


def start_prometheus(directory: Path, port: int | None = None) -> str:
    """Start (or restart, on the same port and storage) the sandbox Prometheus; returns its URL."""
    port = port or processes.free_port()
    scrape_targets_dir(directory).mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(
        f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sandbox
    file_sd_configs:
      - files: ["{scrape_targets_dir(directory)}/*.json"]
        refresh_interval: 1s
"""
    )
    started = processes.start(
        directory,
        NAME,
        [
            str(tool("prometheus")),
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(
        "Prometheus to be ready",
        lambda: _ready(url),
        timeout=60,
        interval=0.1,
        running=lambda: processes.is_running(started),
        log=started.log,
    )
    return url


def stop_prometheus(directory: Path) -> None:
    processes.stop(directory, NAME)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False
