"""A real Kubernetes control plane without containers: etcd plus kube-apiserver on loopback.

Built the way controller-runtime's envtest runs one, with RBAC enforced and an admin client certificate.
There is no controller-manager, scheduler or kubelet: objects are stored and validated, nothing runs.
"""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

from airollout_testbed.sandbox import processes
from airollout_testbed.sandbox.certs import make_certs
from airollout_testbed.sandbox.tools import tool
from airollout_testbed.waiting import wait_for

APISERVER_READY_TIMEOUT = 120.0


# Every request a ServiceAccount makes, with its answer's code: how a test proves the operator, running on a
# ServiceAccount token, was never refused. Nothing else is recorded (the admin's requests are the tests' own).
_AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


def audit_log(directory: Path) -> Path:
    """The apiserver's audit log: one JSON line per request made with a ServiceAccount token."""
    return directory / "logs" / "audit.log"


def start_etcd(directory: Path) -> str:
    """Start etcd on free loopback ports; returns its client URL."""
    client, peer = processes.free_port(), processes.free_port()
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    # Data on tmpfs when there is one: etcd fsyncs are the slowest part of a test apiserver.
    shm = Path("/dev/shm")
    data = (shm if shm.is_dir() else directory) / f"airollout-etcd-{client}"
    (directory / "etcd-data-dir").write_text(str(data))
    started = processes.start(
        directory,
        "etcd",
        [
            str(tool("etcd")), "--name=sandbox", f"--data-dir={data}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=sandbox={peer_url}", "--unsafe-no-fsync", "--log-level=warn",
        ],
    )  # fmt: skip
    wait_for(
        "etcd to answer /health",
        lambda: _http_ok(f"{client_url}/health"),
        timeout=30,
        interval=0.1,
        running=lambda: processes.is_running(started),
        log=started.log,
    )
    return client_url


def start_apiserver(directory: Path, etcd_url: str) -> str:
    """Start kube-apiserver against ``etcd_url``; returns the path of an admin kubeconfig."""
    certs = directory / "pki"
    make_certs(certs)
    port = processes.free_port()
    audit_policy = directory / "audit-policy.yaml"
    audit_policy.write_text(_AUDIT_POLICY)
    started = processes.start(
        directory,
        "kube-apiserver",
        [
            str(tool("kube-apiserver")),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", f"--secure-port={port}",
            "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'apiserver.crt'}", f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--client-ca-file={certs / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            # No controller-manager creates the "default" ServiceAccount, so its admission plugin would
            # refuse every Pod; the sandbox has no kubelet to run one anyway.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true", "--profiling=false", "--v=1",
            f"--audit-policy-file={audit_policy}", f"--audit-log-path={audit_log(directory)}",
        ],
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
    base = f"https://127.0.0.1:{port}"
    wait_for(
        "kube-apiserver to be ready",
        # /readyz, then the default namespace: the system-namespaces controller creates it after start.
        lambda: _http_ok(f"{base}/readyz", context) and _http_ok(f"{base}/api/v1/namespaces/default", context),
        timeout=APISERVER_READY_TIMEOUT,
        interval=0.1,
        running=lambda: processes.is_running(started),
        log=started.log,
    )
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: airollout-sandbox
  cluster: {{server: "{base}", certificate-authority: "{certs / "ca.crt"}"}}
users:
- name: sandbox-admin
  user: {{client-certificate: "{certs / "admin.crt"}", client-key: "{certs / "admin.key"}"}}
contexts:
- name: airollout-sandbox
  context: {{cluster: airollout-sandbox, user: sandbox-admin}}
current-context: airollout-sandbox
"""
    )
    return str(kubeconfig)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as response:
            return 200 <= int(response.status) < 300
    except OSError:
        return False
