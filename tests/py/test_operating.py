"""Operating the worker (docs/operating.md): the systemd unit's command line with sd_notify
readiness, the metrics endpoint scraped over HTTP and parsed as Prometheus text, SIGHUP reloads,
`agilectl stop`, `--version`, `agilectl status` that starts nothing, and a C program built
against an install through pkg-config (docs/c-api.md). Host backend: runs in scripts/test."""
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import agilec
from conftest import Worker

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(agilec.BUILD, "bin")
UNIT = os.path.join(agilec.BUILD, "packaging", "agile-worker.service")
GiB = 1 << 30


def ctl(rundir, *args, timeout=60):
    return subprocess.run([agilec.AGILECTL, "--runtime-dir", rundir, *args], capture_output=True,
                          text=True, timeout=timeout)


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(agile VERSION ([0-9.]+)", f.read()).group(1)


def unit_file(path):
    """The unit's [section] -> {key: value} (every key of ours appears once)."""
    sections, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                cur = sections.setdefault(line.strip("[]"), {})
                continue
            k, v = line.split("=", 1)
            assert k not in cur, f"{k} twice in {path}"
            cur[k] = v
    return sections


def scrape(url):
    """GET url/metrics with a real HTTP client; {(sample name, labels): value} from the
    Prometheus text parser, and the page's families."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    fams = list(text_string_to_metric_families(text))
    samples = {}
    for fam in fams:
        assert fam.documentation, f"{fam.name} has no HELP"
        assert fam.type in ("counter", "gauge"), (fam.name, fam.type)
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, f"{key} twice"
            samples[key] = s.value
    return text, fams, samples


def tenant(samples, name, **labels):
    labels = {"uid": str(os.getuid()), **labels}
    return samples[(name, tuple(sorted(labels.items())))]


class Notify:
    """The systemd side of sd_notify: a datagram socket at $NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def expect(self, what, timeout=60):
        self.sock.settimeout(timeout)
        while True:
            msg = self.sock.recv(4096).decode()
            if what in msg.split("\n"):
                return msg


# A tenant's process: leases `big` bytes (expected to fail or not), then 64 MiB, says what it
# got and holds it until stdin closes.
LEASER = """
import sys
sys.path.insert(0, sys.argv[1])
import agilec
lib = agilec.load_mem(agilec.load(), sys.argv[2])
big = lib.agile_malloc(int(sys.argv[3]), 0, None)
small = lib.agile_malloc(64 << 20, 0, None)
print("big", int(bool(big)), "small", int(bool(small)), flush=True)
sys.stdin.read()
"""


def lease(rundir, big):
    p = subprocess.Popen([sys.executable, "-c", LEASER, os.path.dirname(__file__), rundir, str(big)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    assert line[:1] == ["big"], line
    return p, line[1] == "1", line[3] == "1"


def release(p):
    p.stdin.close()
    assert p.wait(60) == 0


def test_systemd_unit_metrics_and_sighup_reload(tmp_path):
    unit = unit_file(UNIT)
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    argv = shlex.split(svc["ExecStart"])
    assert os.path.basename(argv[0]) == "agile-worker" and "--foreground" in argv
    # The unit's command line, with the build's binary and the paths moved into tmp_path.
    rundir, conf = str(tmp_path / "run"), str(tmp_path / "worker.conf")
    argv[0] = os.path.join(BIN, "agile-worker")
    argv[argv.index("--runtime-dir") + 1] = rundir
    argv[argv.index("--config") + 1] = conf
    with open(conf, "w") as f:
        f.write("[default]\nquota = 768MiB\n[worker]\nmetrics_listen = http://127.0.0.1:0\n")
    notify = Notify(str(tmp_path / "notify.sock"))
    log = open(tmp_path / "worker.log", "w+")
    print("ExecStart:", shlex.join(argv))
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "NOTIFY_SOCKET": notify.path})
    try:
        ready = notify.expect("READY=1")
        assert f"MAINPID={proc.pid}" in ready.split("\n")
        st = ctl(rundir, "status", "--json")
        assert st.returncode == 0, st.stderr
        import json
        url = json.loads(st.stdout)["metrics_url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:[0-9]+", url), url

        # quota 768 MiB (a 1 GiB window): the worker refuses a 900 MiB lease, grants 64 MiB
        p, big, small = lease(rundir, 900 << 20)
        assert (big, small) == (False, True)
        text, fams, m = scrape(url)
        print(f"scraped {len(fams)} families, {len(m)} samples; first lines:\n"
              + "\n".join(text.splitlines()[:12]))
        assert tenant(m, "agile_tenant_quota_bytes") == 768 << 20
        assert tenant(m, "agile_tenant_leased_bytes", gpu="0") >= 64 << 20
        assert tenant(m, "agile_tenant_quota_refusals_total") >= 1
        assert m[("agile_worker_info", (("backend", json.loads(st.stdout)["backend"]),
                                        ("protocol", json.loads(st.stdout)["protocol"]),
                                        ("version", project_version())))] == 1
        for name in ("agile_tenant_ring_commands_total", "agile_tenant_guard_sites_total",
                     "agile_tenant_module_loads_total", "agile_tenant_time_limit_exceeded_total",
                     "agile_tenant_host_op_pauses_total", "agile_tenant_protocol_errors_total"):
            assert tenant(m, name) >= 0
        assert tenant(m, "agile_tenant_module_ops_total", module="fft") >= 0
        release(p)

        # SIGHUP with a new quota: systemd hears RELOADING=1 then READY=1, and the next
        # lease of the tenant is checked against 4 GiB
        with open(conf, "w") as f:
            f.write("[default]\nquota = 4GiB\npriority = 3\n"
                    "[worker]\nmetrics_listen = http://127.0.0.1:0\n")
        os.kill(proc.pid, signal.SIGHUP)
        notify.expect("RELOADING=1")
        notify.expect("READY=1")
        _, _, m = scrape(url)
        assert tenant(m, "agile_tenant_quota_bytes") == 4 * GiB
        assert tenant(m, "agile_tenant_priority") == 3
        assert m[("agile_config_reloads_total", (("result", "ok"),))] == 1
        me = [t for t in json.loads(ctl(rundir, "status", "--json").stdout)["tenants"]
              if t["uid"] == os.getuid()][0]
        assert me["quota_bytes"] == 4 * GiB and me["priority"] == 3
        p, big, small = lease(rundir, 2 * GiB)
        assert (big, small) == (True, True)
        release(p)

        # a bad file is refused: logged, counted, the running config kept
        with open(conf, "w") as f:
            f.write("[default]\nquota = lots\n")
        os.kill(proc.pid, signal.SIGHUP)
        notify.expect("READY=1")
        _, _, m = scrape(url)
        assert tenant(m, "agile_tenant_quota_bytes") == 4 * GiB
        assert m[("agile_config_reloads_total", (("result", "refused"),))] == 1
        log.flush()
        assert ("config reload refused, keeping the running config: line 2: bad size for quota"
                in open(tmp_path / "worker.log").read())

        out = ctl(rundir, "stop")
        assert out.returncode == 0, out.stderr
        notify.expect("STOPPING=1")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(open(tmp_path / "worker.log").read()[-1500:])


def test_metrics_are_off_by_default(rundir):
    w = Worker(rundir)
    try:
        assert w.status()["metrics_url"] == ""
        assert "metrics" not in w.logtext()
    finally:
        w.stop()


def test_a_metrics_address_in_use_stops_the_start(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    conf = tmp_path / "w.conf"
    conf.write_text(f"[worker]\nmetrics_listen = http://127.0.0.1:{busy.getsockname()[1]}\n")
    out = subprocess.run([agilec.WORKER, "--runtime-dir", str(tmp_path / "run"), "--backend",
                          "host", "--config", str(conf)], capture_output=True, text=True,
                         timeout=60)
    busy.close()
    assert out.returncode == 1
    assert "metrics_listen http://127.0.0.1:" in out.stderr, out.stderr


def test_version_of_every_tool():
    v = project_version()
    for tool in ("agile-worker", "agilectl", "agile-guard"):
        out = subprocess.run([os.path.join(BIN, tool), "--version"], capture_output=True,
                             text=True, timeout=30)
        print(out.stdout.strip())
        assert out.returncode == 0
        assert out.stdout.startswith(f"{tool} {v}"), out.stdout


def test_status_starts_no_worker_unless_asked(rundir):
    for args in (["status"], ["status", "--json"], ["ping", "-n", "1"], ["--no-start", "status"]):
        out = ctl(rundir, *args)
        assert out.returncode == 1
        assert "no worker is running" in out.stderr and "--start" in out.stderr, out.stderr
        assert not os.path.exists(os.path.join(rundir, "agile.pid"))
    out = ctl(rundir, "--start", "status")
    assert out.returncode == 0, out.stderr
    assert "TENANT(uid)" in out.stdout
    out = ctl(rundir, "stop")
    assert out.returncode == 0 and "stopped the worker" in out.stdout, out.stderr
    assert not os.path.exists(os.path.join(rundir, "agile.sock"))


def test_stop_waits_for_the_worker_and_says_when_none_runs(rundir):
    out = ctl(rundir, "stop")
    assert out.returncode == 1
    assert out.stderr.strip() == f"agilectl stop: no worker runs on {rundir}"
    w = Worker(rundir)
    lib = agilec.load()
    c = agilec.Client(lib, rundir)
    try:
        assert c.ping() == 0
        out = ctl(rundir, "stop")
        print(out.stdout.strip())
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"agilectl: stopped the worker (pid {w.proc.pid}) on {rundir}"
        # stop returned once the worker had released everything: its lock, sockets and pid file
        assert w.proc.wait(10) == 0
        for f in ("agile.pid", "agile.sock", "agile.fd.sock"):
            assert not os.path.exists(os.path.join(rundir, f)), f
        assert c.ping() != 0
    finally:
        c.close()
        w.stop()
    out = ctl(rundir, "stop")
    assert out.returncode == 1 and "no worker runs" in out.stderr


def test_stop_ignores_a_pid_file_nobody_holds(rundir):
    """A dead worker's agile.pid (or a planted one) names a pid nobody locks: stop signals
    nobody (here the pid is pytest's own)."""
    os.mkdir(rundir, 0o700)
    with open(os.path.join(rundir, "agile.pid"), "w") as f:
        f.write(f"{os.getpid()}\n")
    out = ctl(rundir, "stop")
    assert out.returncode == 1 and "no worker runs" in out.stderr


def test_c_example_builds_against_an_install(tmp_path):
    """docs/c-api.md's example, built with its pkg-config line against `cmake --install` into
    a temporary prefix, runs on the host backend (its worker started from the prefix)."""
    example = os.path.join(ROOT, "docs", "examples", "hello.c")
    with open(example) as f, open(os.path.join(ROOT, "docs", "c-api.md")) as d:
        assert f.read() in d.read(), "docs/c-api.md shows docs/examples/hello.c verbatim"
    prefix = tmp_path / "prefix"
    out = subprocess.run(["cmake", "--install", agilec.BUILD, "--prefix", str(prefix)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    for f in ("bin/agile-worker", "bin/agilectl", "bin/agile-guard", "include/agile/agile.h",
              "lib/libagile.so", "lib/pkgconfig/agile.pc",
              "lib/systemd/system/agile-worker.service", "etc/agile/worker.conf"):
        assert (prefix / f).exists(), f
    env = {**os.environ, "PKG_CONFIG_PATH": str(prefix / "lib" / "pkgconfig"),
           "AGILE_RUNTIME_DIR": str(tmp_path / "run")}
    env.pop("AGILE_WORKER", None)
    cmd = ("cc -std=c11 -Wall -Werror docs/examples/hello.c $(pkg-config --cflags --libs agile) "
           "-Wl,-rpath,$(pkg-config --variable=libdir agile) -o " + str(tmp_path / "hello"))
    out = subprocess.run(cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        out = subprocess.run([str(tmp_path / "hello")], env=env, capture_output=True, text=True,
                             timeout=120)
        print(out.stdout)
        assert out.returncode == 0, out.stderr
        assert "64 MiB reserved from the worker" in out.stdout
        # the worker it started is the installed one
        pid = open(tmp_path / "run" / "agile.pid").read().strip()
        assert os.readlink(f"/proc/{pid}/exe") == str(prefix / "bin" / "agile-worker")
    finally:
        subprocess.run([str(prefix / "bin" / "agilectl"), "--runtime-dir", str(tmp_path / "run"),
                        "stop"], capture_output=True, timeout=60)
