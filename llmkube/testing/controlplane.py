"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

No kubelet or scheduler: pods never run, which is what an envtest-style operator test wants. TLS
with a throw-away CA, static-token authentication, RBAC authorization. Two identities: an admin
(system:masters) and a restricted user with no permissions until a test binds some.

    with ControlPlane.start(workdir) as cp:
        cp.kubectl("get", "namespaces")

`python -m llmkube.testing.controlplane` starts one and waits, for poking at it by hand.
"""

import json
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmkube.testing.binaries import server_binaries
from llmkube.testing.certificates import write_pki
from llmkube.testing.processes import ServerProcess, StoppedOnExit, free_port, wait_until

RESTRICTED_USER = "llmkube-restricted"


@dataclass
class Identity:
    user: str
    token: str
    groups: tuple[str, ...] = ()
    kubeconfig: Path = field(default=Path())


@dataclass
class ControlPlane(StoppedOnExit):
    workdir: Path
    server: str
    ca_file: Path
    admin: Identity
    restricted: Identity
    binaries: dict[str, Path]
    versions: dict[str, str]
    startup_seconds: float
    processes: list[ServerProcess]
    _owns_workdir: bool = False

    @classmethod
    def start(cls, workdir: Path | None = None, *, timeout: float = 90.0) -> "ControlPlane":
        owns = workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="llmkube-cp-")) if workdir is None else workdir
        workdir.mkdir(parents=True, exist_ok=True)
        binaries = {
            name: path
            for name, path in server_binaries().items()
            if name in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
        }
        begun = time.monotonic()
        write_pki(workdir)

        identities = {
            "admin": Identity("llmkube-admin", secrets.token_hex(16), ("system:masters",)),
            "restricted": Identity(RESTRICTED_USER, secrets.token_hex(16)),
            "controller-manager": Identity("system:kube-controller-manager", secrets.token_hex(16)),
        }
        (workdir / "tokens.csv").write_text(
            "".join(
                f'{i.token},{i.user},{i.user},"{",".join(i.groups)}"\n' for i in identities.values()
            )
        )

        etcd_port, etcd_peer, api_port, cm_port = (free_port() for _ in range(4))
        server = f"https://127.0.0.1:{api_port}"
        for name, identity in identities.items():
            identity.kubeconfig = workdir / f"{name}.kubeconfig"
            _write_kubeconfig(identity.kubeconfig, server, workdir / "ca.crt", identity)

        processes: list[ServerProcess] = []
        plane = cls(
            workdir=workdir,
            server=server,
            ca_file=workdir / "ca.crt",
            admin=identities["admin"],
            restricted=identities["restricted"],
            binaries=binaries,
            versions={},
            startup_seconds=0.0,
            processes=processes,
            _owns_workdir=owns,
        )
        try:
            etcd_url = f"http://127.0.0.1:{etcd_port}"
            peer_url = f"http://127.0.0.1:{etcd_peer}"
            processes.append(
                ServerProcess(
                    "etcd",
                    [
                        str(binaries["etcd"]),
                        "--name=default",
                        f"--data-dir={workdir / 'etcd'}",
                        f"--listen-client-urls={etcd_url}",
                        f"--advertise-client-urls={etcd_url}",
                        f"--listen-peer-urls={peer_url}",
                        f"--initial-advertise-peer-urls={peer_url}",
                        f"--initial-cluster=default={peer_url}",
                        "--unsafe-no-fsync",  # test data; durability only costs time here
                        "--log-level=warn",
                    ],
                    workdir,
                )
            )
            processes.append(
                ServerProcess(
                    "kube-apiserver",
                    [
                        str(binaries["kube-apiserver"]),
                        f"--etcd-servers={etcd_url}",
                        "--bind-address=127.0.0.1",
                        "--advertise-address=127.0.0.1",
                        f"--secure-port={api_port}",
                        f"--cert-dir={workdir}",
                        f"--tls-cert-file={workdir / 'server.crt'}",
                        f"--tls-private-key-file={workdir / 'server.key'}",
                        f"--client-ca-file={workdir / 'ca.crt'}",
                        f"--token-auth-file={workdir / 'tokens.csv'}",
                        "--authorization-mode=RBAC",
                        f"--service-account-key-file={workdir / 'sa.pub'}",
                        f"--service-account-signing-key-file={workdir / 'sa.key'}",
                        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                        "--service-cluster-ip-range=10.96.0.0/16",
                        "--allow-privileged=true",
                        "--profiling=false",
                    ],
                    workdir,
                )
            )
            wait_until(
                lambda: plane._healthy("/readyz"),
                timeout=timeout,
                what="kube-apiserver",
                watch=processes,
            )
            processes.append(
                ServerProcess(
                    "kube-controller-manager",
                    [
                        str(binaries["kube-controller-manager"]),
                        f"--kubeconfig={identities['controller-manager'].kubeconfig}",
                        f"--authentication-kubeconfig={identities['controller-manager'].kubeconfig}",
                        f"--authorization-kubeconfig={identities['controller-manager'].kubeconfig}",
                        "--leader-elect=false",
                        "--bind-address=127.0.0.1",
                        f"--secure-port={cm_port}",
                        f"--cert-dir={workdir / 'controller-manager'}",
                        # Like kubeadm: each controller acts as its own service account, with the
                        # bootstrap RBAC role Kubernetes ships for it.
                        "--use-service-account-credentials=true",
                        f"--service-account-private-key-file={workdir / 'sa.key'}",
                        f"--root-ca-file={workdir / 'ca.crt'}",
                        "--controllers=*,-bootstrapsigner,-tokencleaner",
                    ],
                    workdir,
                )
            )
            wait_until(
                lambda: plane._controller_manager_healthy(cm_port),
                timeout=timeout,
                what="kube-controller-manager",
                watch=processes,
            )
            plane.startup_seconds = time.monotonic() - begun
            plane.versions = {name: _version(name, path) for name, path in binaries.items()}
        except BaseException:
            plane.stop()
            raise
        return plane

    def _healthy(self, path: str) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.admin.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @staticmethod
    def _controller_manager_healthy(port: int) -> bool:
        # /healthz is served without authentication; its certificate is self-signed.
        context = ssl._create_unverified_context()
        try:
            url = f"https://127.0.0.1:{port}/healthz"
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig acting as ServiceAccount `namespace/name`, with a token from the
        TokenRequest API, as a pod of that ServiceAccount would have."""
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=24h")
        if token.returncode != 0:
            raise RuntimeError(f"cannot get a token for {namespace}/{name}: {token.stderr}")
        identity = Identity(
            f"system:serviceaccount:{namespace}:{name}",
            token.stdout.strip(),
            kubeconfig=self.workdir / f"sa-{namespace}-{name}.kubeconfig",
        )
        _write_kubeconfig(identity.kubeconfig, self.server, self.ca_file, identity)
        return identity.kubeconfig

    def install_crds(self, paths: list[Path], timeout: float = 60.0) -> None:
        """Apply CRD files (server-side: KubeRay's exceed the client-side annotation limit) and
        wait until every CRD is Established."""
        for path in paths:
            result = self.kubectl("apply", "--server-side", "-f", str(path))
            if result.returncode != 0:
                raise RuntimeError(f"installing {path} failed:\n{result.stderr}")
        # `kubectl wait` errors out on a CRD that has no status yet, so poll instead.
        wait_until(self._all_crds_established, timeout=timeout, what="CRDs Established")

    def _all_crds_established(self) -> bool:
        listed = self.kubectl("get", "crd", "-o", "json")
        if listed.returncode != 0:
            return False
        return all(
            any(
                condition["type"] == "Established" and condition["status"] == "True"
                for condition in (crd.get("status") or {}).get("conditions") or []
            )
            for crd in json.loads(listed.stdout)["items"]
        )

    def kubectl(
        self, *args: str, identity: Identity | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the project's own kubectl against this control plane (never the machine's)."""
        kubeconfig = (identity or self.admin).kubeconfig
        return subprocess.run(
            [str(self.binaries["kubectl"]), f"--kubeconfig={kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            check=False,
            timeout=120,
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _write_kubeconfig(path: Path, server: str, ca_file: Path, identity: Identity) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "llmkube-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": identity.user, "user": {"token": identity.token}}],
        "contexts": [
            {"name": "llmkube-test", "context": {"cluster": "llmkube-test", "user": identity.user}}
        ],
        "current-context": "llmkube-test",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _version(name: str, binary: Path) -> str:
    flag = ["version", "--client"] if name == "kubectl" else ["--version"]
    result = subprocess.run([str(binary), *flag], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def main() -> None:
    # `kill PID` stops it as cleanly as Ctrl-C: servers stopped, work dir removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with ControlPlane.start() as plane:
        print(f"control plane ready in {plane.startup_seconds:.1f}s at {plane.server}")
        print(f"admin kubeconfig:      {plane.admin.kubeconfig}")
        print(f"restricted kubeconfig: {plane.restricted.kubeconfig}")
        print(f"kubectl:               {plane.binaries['kubectl']}")
        print("Ctrl-C stops it.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
