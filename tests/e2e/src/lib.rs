//! A real Kubernetes control plane for tests: `etcd`, `kube-apiserver` and
//! `kube-controller-manager` (owner-reference garbage collection, Deployment → ReplicaSet →
//! Pod, Deployment status) as local processes, plus the `herald-operator` binary against it.
//!
//! The binaries come from `scripts/control-plane` (built from the Go module proxy once, then
//! cached). No kubelet or scheduler runs: pods stay Pending unless a test plays the kubelet and
//! marks them ready through the status subresource ([`ControlPlane::mark_pods_ready`]).
//!
//! Every process is started with `PR_SET_PDEATHSIG`, so it dies with the test binary even if
//! the binary is killed.

pub mod node;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

/// Bearer token of the test's cluster-admin (group `system:masters`).
const TOKEN: &str = "herald-e2e-admin-token";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

type SpawnRequest = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from one thread that lives as long as the test binary. `PR_SET_PDEATHSIG`
/// fires when the *thread* that forked exits, and test threads end with their test: a control
/// plane shared by several tests must not die with the first one.
fn spawn_on_keeper(command: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<std::sync::mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("process-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The sender lives in a static: never reached while the binary runs.
                loop {
                    std::thread::park();
                }
            })
            .expect("keeper thread");
        Mutex::new(tx)
    });
    let (reply, answer) = std::sync::mpsc::channel();
    keeper
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((command, reply))
        .map_err(|_| std::io::Error::other("process keeper thread is gone"))?;
    answer.recv().map_err(|_| std::io::Error::other("process keeper thread is gone"))?
}

/// A child process killed (and reaped) on drop, and when the test process dies.
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args`, output to `<dir>/<name>.log`.
    pub fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        dir: &Path,
    ) -> Process {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for (k, v) in env {
            command.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec here.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child =
            spawn_on_keeper(command).unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Process { name, child, log }
    }

    /// The last lines of the process's output (for failure messages).
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics with the log when the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.tail());
        }
    }

    /// Sends SIGTERM and waits up to `grace` for exit; SIGKILL after.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory holding etcd, kube-apiserver, kube-controller-manager and helm.
pub fn control_plane_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("HERALD_CONTROL_PLANE_BIN") {
        return PathBuf::from(dir);
    }
    let script = workspace_root().join("scripts/control-plane");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/control-plane failed: it builds the control plane from the Go module proxy"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Removes the directories of earlier test runs whose process is gone (a control plane in a
/// static is never dropped, so its directory outlives the run).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("herald-e2e-").and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A running control plane.
pub struct ControlPlane {
    /// Directory with logs, certificates and the kubeconfig.
    pub dir: PathBuf,
    /// Path of the admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The directory with the binaries (helm is there too).
    pub bin: PathBuf,
    api_port: u16,
    /// kube-apiserver's arguments, to start it again the same way.
    apiserver_args: Vec<String>,
    processes: Vec<Process>,
}

fn kubeconfig_text(port: u16, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: user\n    namespace: default\ncurrent-context: e2e\n"
    )
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} not ready after {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager; returns once the apiserver is
    /// ready.
    pub fn start() -> ControlPlane {
        let bin = control_plane_bin();
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("herald-e2e-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let s = |p: &Path| p.display().to_string();

        let sa_key = dir.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out", &s(&sa_key), "2048"])
            .stderr(Stdio::null())
            .status()
            .expect("openssl (for the service-account signing key)");
        assert!(status.success(), "openssl genrsa failed");
        std::fs::write(dir.join("tokens.csv"), format!("{TOKEN},admin,admin,system:masters\n"))
            .expect("token file");

        let etcd_port = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = Process::start(
            "etcd",
            &bin.join("etcd"),
            &[
                format!("--data-dir={}", s(&dir.join("etcd"))),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{}", free_port()),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &[],
            &dir,
        );

        let api_port = free_port();
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--cert-dir={}", s(&dir.join("certs"))),
            "--authorization-mode=RBAC".into(),
            format!("--token-auth-file={}", s(&dir.join("tokens.csv"))),
            format!("--service-account-issuer=https://127.0.0.1:{api_port}"),
            format!("--service-account-key-file={}", s(&sa_key)),
            format!("--service-account-signing-key-file={}", s(&sa_key)),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            "--enable-priority-and-fairness=false".into(),
            "--v=1".into(),
        ];
        let apiserver =
            Process::start("kube-apiserver", &bin.join("kube-apiserver"), &apiserver_args, &[], &dir);

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(api_port, TOKEN)).expect("kubeconfig");

        let mut plane = ControlPlane {
            dir: dir.clone(),
            kubeconfig,
            bin: bin.clone(),
            api_port,
            apiserver_args,
            processes: vec![etcd, apiserver],
        };
        plane.wait_for_apiserver();
        wait_until("namespace default", Duration::from_secs(30), || {
            plane.kubectl(&["get", "namespace", "default"]).0
        });
        let kcm = Process::start(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", s(&plane.kubeconfig)),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                format!("--service-account-private-key-file={}", s(&sa_key)),
                "--use-service-account-credentials=false".into(),
                "--controllers=*,-serviceaccount-token,-bootstrapsigner,-tokencleaner".into(),
                "--v=1".into(),
            ],
            &[],
            &dir,
        );
        plane.processes.push(kcm);
        plane
    }

    fn wait_for_apiserver(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.kubectl(&["get", "--raw", "/readyz"]).0 {
            self.processes.iter_mut().for_each(Process::assert_running);
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 90 s:\n{}",
                self.processes[1].tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops kube-apiserver (SIGTERM), keeps it down for `down`, starts it again on the same port
    /// with the same certificates and waits until it is ready: every watch breaks and every
    /// client sees the API go away and come back.
    pub fn restart_apiserver(&mut self, down: Duration) {
        self.processes[1].stop(Duration::from_secs(10));
        std::thread::sleep(down);
        self.processes[1] = Process::start(
            "kube-apiserver",
            &self.bin.join("kube-apiserver"),
            &self.apiserver_args,
            &[],
            &self.dir,
        );
        self.wait_for_apiserver();
    }

    /// Runs kubectl against the control plane; returns (success, stdout + stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        self.kubectl_stdin(args, None)
    }

    /// Runs kubectl with `stdin` as its input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        self.kubectl_as(&self.kubeconfig, args, stdin)
    }

    /// Runs kubectl as whoever `kubeconfig` authenticates (a ServiceAccount token, say).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(kubeconfig).args(args);
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("kubectl is installed");
        if let Some(input) = stdin {
            use std::io::Write;
            let _ = child.stdin.take().expect("stdin").write_all(input.as_bytes());
        }
        let out = child.wait_with_output().expect("kubectl runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Like [`kubectl`](Self::kubectl), panicking on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed:\n{out}");
        out
    }

    /// A client for the control plane.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig parses");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig is usable");
        Client::try_from(config).expect("client")
    }

    /// Applies the committed CRDs and waits until both are established.
    pub fn install_crds(&self) {
        let path = workspace_root().join("crds/herald.dev.yaml");
        self.kubectl_ok(&["apply", "--server-side", "-f", &path.display().to_string()]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/pusherclusters.herald.dev",
            "crd/pusherapps.herald.dev",
        ]);
    }

    /// Writes a kubeconfig that authenticates with `token` (a ServiceAccount's, say).
    pub fn kubeconfig_for_token(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{name}"));
        std::fs::write(&path, kubeconfig_text(self.api_port, token)).expect("kubeconfig");
        path
    }

    /// A token of ServiceAccount `namespace/name` (TokenRequest API).
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.kubectl_ok(&["create", "token", name, "-n", namespace, "--duration=1h"]).trim().to_owned()
    }

    /// Runs helm against this control plane; returns (success, output).
    pub fn helm(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(self.bin.join("helm"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"))
            .output()
            .expect("helm runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Starts the herald-operator binary against this control plane as the admin.
    pub fn start_operator(&self, extra_env: &[(&str, &str)]) -> Process {
        self.start_operator_as(&self.kubeconfig, extra_env)
    }

    /// Starts the herald-operator binary with the given kubeconfig.
    pub fn start_operator_as(&self, kubeconfig: &Path, extra_env: &[(&str, &str)]) -> Process {
        let kubeconfig = kubeconfig.display().to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("KUBECONFIG", &kubeconfig),
            ("HERALD_OPERATOR_METRICS_ADDR", "127.0.0.1:0"),
            ("RUST_LOG", "info,herald_operator=debug,kube_runtime=warn"),
        ];
        env.extend_from_slice(extra_env);
        Process::start("herald-operator", &binary("herald-operator"), &[], &env, &self.dir)
    }

    /// Plays the kubelet: marks every pod matching `selector` in `namespace` Running and Ready.
    pub async fn mark_pods_ready(&self, client: &Client, namespace: &str, selector: &str) -> usize {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let list = pods.list(&kube::api::ListParams::default().labels(selector)).await.expect("list pods");
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        for pod in &list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let status = json!({ "status": {
                "phase": "Running",
                "conditions": [
                    { "type": "PodScheduled", "status": "True", "lastTransitionTime": now },
                    { "type": "Initialized", "status": "True", "lastTransitionTime": now },
                    { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
                    { "type": "Ready", "status": "True", "lastTransitionTime": now }
                ],
                "startTime": now
            }});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .expect("patch pod status");
        }
        list.items.len()
    }

    /// Creates a namespace for one test.
    pub async fn namespace(&self, client: &Client, name: &str) {
        let ns: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": name } })).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }

    /// The last lines of a process's log, by name (`kube-apiserver`, ...).
    pub fn log_tail(&self, name: &str) -> String {
        self.processes.iter().find(|p| p.name == name).map(Process::tail).unwrap_or_default()
    }
}

/// A binary of this workspace, built next to the test executable (or `HERALD_<NAME>_BIN`).
pub fn binary(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(&var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} not built: run `cargo build -p {name}` (or set {var})", path.display());
    path
}

/// Polls `check` (async) every 200 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
