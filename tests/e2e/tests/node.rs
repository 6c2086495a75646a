//! The chart, the operator and herald-server as real pods on a real node (`scripts/kube-node`):
//! containerd runs the images FROM scratch under their security context, the kubelet probes
//! them, kube-proxy spreads clients over a Service, CoreDNS names Redis. Official pusher-js
//! clients and the official server SDK run inside the node's network namespace.
//!
//! Built only with `--features node` and run by `scripts/test` after `scripts/kube-node up`
//! (one test: the scenarios share the node and run in order). Each prints what it measured.

use std::time::{Duration, Instant};

use herald_e2e::node::{now_ms, poll, KubeNode};
use herald_e2e::workspace_root;
use serde_json::{json, Value};

const NS: &str = "node-e2e";
const APP_ID: &str = "482910";
const KEY: &str = "shop-7f3a9c2e41b8d605ea17";
const SECRET: &str = "first-secret-4b1e9a0c77d2";
const CLIENTS: usize = 12;

fn split_image(image: &str) -> (&str, &str) {
    image.rsplit_once(':').expect("images are printed as repository:tag")
}

#[test]
fn the_chart_the_operator_and_the_server_run_as_pods_on_a_real_node() {
    let node = KubeNode::from_env();
    clean_up_earlier_run(&node);
    helm_install_and_test(&node);
    let service = cluster_and_gitops_app_serve_clients_across_pods(&node);
    a_new_app_serves_within_seconds_without_restarts(&node, &service);
    rotating_the_secret_drops_no_socket(&node, &service);
    a_force_deleted_pod_leaves_no_ghost_members(&node, &service);
    a_rolling_update_drains_spread_out_behind_the_pdb(&node, &service);
    the_operator_pod_replaced_resumes_and_restores_a_deleted_service(&node);
}

fn operator_rolled_out(node: &KubeNode) {
    node.kubectl_ok(&[
        "rollout",
        "status",
        "-n",
        "herald-system",
        "deployment/herald-operator",
        "--timeout=90s",
    ]);
}

fn clean_up_earlier_run(node: &KubeNode) {
    let _ = node.helm(&["uninstall", "herald-operator", "-n", "herald-system", "--wait"]);
    let _ = node.kubectl(&["delete", "namespace", NS, "--wait=true", "--timeout=120s"]);
}

/// Scenario 1: `helm install` with the operator image; the operator pod gets Ready on the
/// chart's security context and RBAC; `helm test` passes.
fn helm_install_and_test(node: &KubeNode) {
    let (operator_repo, operator_tag) = split_image(&node.operator_image);
    let (server_repo, server_tag) = split_image(&node.server_image);
    let chart = workspace_root().join("charts/herald-operator").display().to_string();
    let started = Instant::now();
    let (ok, out) = node.helm(&[
        "install",
        "herald-operator",
        &chart,
        "--namespace",
        "herald-system",
        "--create-namespace",
        "--set",
        &format!("image.repository={operator_repo}"),
        "--set",
        &format!("image.tag={operator_tag}"),
        "--set",
        "image.pullPolicy=Never",
        "--set",
        &format!("serverImage.repository={server_repo}"),
        "--set",
        &format!("serverImage.tag={server_tag}"),
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(ok, "helm install: {out}");
    operator_rolled_out(node);
    let (ok, out) = node.helm(&["test", "herald-operator", "-n", "herald-system", "--timeout", "60s"]);
    assert!(ok && out.contains("Succeeded"), "helm test: {out}");
    println!("scenario 1: operator Ready and helm test passed {:?} after helm install", started.elapsed());
}

/// The app's Service as the clients inside the namespace reach it.
struct Service {
    ip: String,
}

fn fleet_config(service: &Service, secret: &str, seconds: u64, rate: u32, stay_down: bool) -> Value {
    json!({
        "host": service.ip, "port": 6001, "appId": APP_ID, "key": KEY, "secret": secret,
        "clients": CLIENTS, "seconds": seconds, "rate": rate, "stayDown": stay_down,
    })
}

fn server_pods(node: &KubeNode) -> Vec<(String, String, u64)> {
    let out = node.jsonpath(
        NS,
        "pods",
        "{range .items[?(@.metadata.labels.app\\.kubernetes\\.io/component==\"server\")]}{.metadata.name} {.status.podIP} {.status.containerStatuses[0].restartCount} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    );
    out.lines()
        .filter_map(|l| {
            let parts: Vec<_> = l.split_whitespace().collect();
            // Pods on their way out carry a deletion timestamp (a fourth field).
            (parts.len() == 3).then(|| (parts[0].into(), parts[1].into(), parts[2].parse().unwrap_or(0)))
        })
        .collect()
}

fn wait_ready_replicas(node: &KubeNode, n: usize) {
    poll(&format!("{n} server pods ready, none terminating"), Duration::from_secs(180), || {
        let ready = node.jsonpath(NS, "deployment/realtime", "{.status.readyReplicas}");
        let updated = node.jsonpath(NS, "deployment/realtime", "{.status.updatedReplicas}");
        let pods = server_pods(node);
        (ready == n.to_string() && updated == n.to_string() && pods.len() == n).then_some(())
    });
}

/// Scenario 2: a PusherCluster (managed Redis from the local image, 2 replicas) and a GitOps
/// PusherApp get Ready; clients through the ClusterIP land on both pods; presence, private,
/// public and client events cross them; `kubectl get pusherapps` shows the live connections.
fn cluster_and_gitops_app_serve_clients_across_pods(node: &KubeNode) -> Service {
    node.kubectl_ok(&["create", "namespace", NS]);
    let started = Instant::now();
    node.apply(
        NS,
        &format!(
            r#"
apiVersion: v1
kind: Secret
metadata: {{ name: shop-pusher, labels: {{ herald.dev/credentials: "true" }} }}
stringData: {{ key: {KEY}, secret: {SECRET} }}
---
apiVersion: herald.dev/v1alpha1
kind: PusherCluster
metadata: {{ name: realtime }}
spec:
  replicas: 2
  imagePullPolicy: Never
  redis: {{ mode: Managed, managed: {{ image: "{redis}" }} }}
  podDisruptionBudget: {{ maxUnavailable: 1 }}
---
apiVersion: herald.dev/v1alpha1
kind: PusherApp
metadata: {{ name: shop }}
spec:
  clusterRef: realtime
  appId: "{APP_ID}"
  clientEvents: true
  credentials: {{ secretRef: {{ name: shop-pusher }} }}
"#,
            redis = node.redis_image
        ),
    );
    node.kubectl_ok(&["wait", "-n", NS, "--for=condition=Ready", "pushercluster/realtime", "--timeout=180s"]);
    node.kubectl_ok(&["wait", "-n", NS, "--for=condition=Ready", "pusherapp/shop", "--timeout=60s"]);
    let ready_after = started.elapsed();
    let pods = server_pods(node);
    assert_eq!(pods.len(), 2, "{pods:?}");
    for (name, _, restarts) in &pods {
        if *restarts > 0 {
            let (_, previous) = node.kubectl(&["logs", "-n", NS, name, "--previous"]);
            let (_, events) = node.kubectl(&[
                "get",
                "events",
                "-n",
                NS,
                "--field-selector",
                &format!("involvedObject.name={name}"),
            ]);
            panic!(
                "{name} restarted {restarts} times while its Redis started beside it:\n{previous}\n{events}"
            );
        }
    }
    let service = Service { ip: node.jsonpath(NS, "service/realtime", "{.spec.clusterIP}") };
    // Ready pods reach the Service's endpoints, then kube-proxy's rules, a moment later.
    poll("both pods are endpoints of the Service", Duration::from_secs(30), || {
        let (_, rules) = node.run_in_ns("iptables", &["-t", "nat", "-S"]);
        let programmed = rules
            .lines()
            .filter(|l| l.contains(&format!("\"{NS}/realtime:http\"")) && l.contains("DNAT"))
            .count();
        (programmed == 2).then_some(())
    });

    // Long enough for the operator's usage refresh (every 30 s) to show the connections.
    let mut fleet = node.script("k8s-fleet.mjs", &fleet_config(&service, SECRET, 45, 2, false));
    fleet.line("ready");
    // Both pods hold some of the clients kube-proxy spread.
    let per_pod: Vec<f64> = pods
        .iter()
        .map(|(name, ip, _)| {
            node.pod_metric(ip, 9601, "herald_connected").unwrap_or_else(|| panic!("{name}'s /metrics"))
        })
        .collect();
    assert!(per_pod.iter().all(|n| *n > 0.0), "clients landed on every pod: {per_pod:?}");
    assert_eq!(per_pod.iter().sum::<f64>() as usize, CLIENTS, "{per_pod:?}");
    let shown = poll("kubectl get pusherapps shows the live connections", Duration::from_secs(40), || {
        let out = node.kubectl_ok(&["get", "pusherapps", "-n", NS]);
        out.lines().any(|l| l.starts_with("shop") && l.split_whitespace().nth(5) == Some("12")).then_some(out)
    });
    let summary = fleet.line("summary");
    for c in summary["clients"].as_array().expect("clients") {
        assert_eq!(c["received"], summary["sent"], "every client got every event: {c}");
    }
    println!(
        "scenario 2: cluster and app Ready in {ready_after:?}; {CLIENTS} clients over the ClusterIP: {per_pod:?} per pod\n{shown}"
    );
    service
}

/// Runs the roundtrip script (connect, subscribe public/private/presence, trigger) once.
fn roundtrip(node: &KubeNode, service: &Service, app_id: &str, key: &str, secret: &str) -> bool {
    let cfg = json!({
        "host": service.ip, "clientPort": 6001, "apiPort": 6001, "appId": app_id, "key": key,
        "secret": secret, "timeoutMs": 4000,
    });
    node.script("k8s-roundtrip.mjs", &cfg).finish()
}

fn pod_names_and_restarts(node: &KubeNode) -> Vec<(String, u64)> {
    server_pods(node).into_iter().map(|(n, _, r)| (n, r)).collect()
}

/// Scenario 6: `kubectl apply` of a new PusherApp; pusher-js connects and subscribes with its
/// credentials within 5 s, and no pod restarts.
fn a_new_app_serves_within_seconds_without_restarts(node: &KubeNode, service: &Service) {
    let before = pod_names_and_restarts(node);
    let applied = Instant::now();
    node.apply(
        NS,
        r#"
apiVersion: v1
kind: Secret
metadata: { name: late-pusher, labels: { herald.dev/credentials: "true" } }
stringData: { key: late-key-9d0c, secret: late-secret-51aa }
---
apiVersion: herald.dev/v1alpha1
kind: PusherApp
metadata: { name: late }
spec:
  clusterRef: realtime
  appId: "777001"
  credentials: { secretRef: { name: late-pusher } }
"#,
    );
    poll("the new app serves", Duration::from_secs(30), || {
        roundtrip(node, service, "777001", "late-key-9d0c", "late-secret-51aa").then_some(())
    });
    let took = applied.elapsed();
    assert_eq!(pod_names_and_restarts(node), before, "no pod restarted or was replaced");
    println!(
        "scenario 6: a new PusherApp served (connect + subscribe + trigger) {took:?} after kubectl apply"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Scenario 5: rotating a GitOps app's secret with clients connected drops no socket; the new
/// secret signs within 5 s.
fn rotating_the_secret_drops_no_socket(node: &KubeNode, service: &Service) {
    let mut fleet = node.script("k8s-fleet.mjs", &fleet_config(service, SECRET, 12, 0, false));
    fleet.line("ready");
    let rotated = Instant::now();
    node.kubectl_ok(&[
        "patch",
        "secret",
        "shop-pusher",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"stringData":{"secret":"second-secret-e83f0b12"}}"#,
    ]);
    poll("the new secret signs", Duration::from_secs(30), || {
        roundtrip(node, service, APP_ID, KEY, "second-secret-e83f0b12").then_some(())
    });
    let took = rotated.elapsed();
    let summary = fleet.line("summary");
    assert_eq!(summary["closes"], json!([]), "no socket closed: {summary}");
    for c in summary["clients"].as_array().expect("clients") {
        assert_eq!(c["dropped"], false, "{c}");
    }
    println!("scenario 5: secret rotated, new secret signs after {took:?}; {CLIENTS} sockets kept");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Scenario 4: `kubectl delete pod --force --grace-period=0` of a server pod holding presence
/// members: the clients on the other pod get `member_removed` for each within the lease bound,
/// and the Deployment replaces the pod.
fn a_force_deleted_pod_leaves_no_ghost_members(node: &KubeNode, service: &Service) {
    let mut fleet =
        node.script("k8s-fleet.mjs", &fleet_config(service, "second-secret-e83f0b12", 25, 0, true));
    fleet.line("ready");
    let pods = server_pods(node);
    let (victim, _, _) = pods
        .iter()
        .max_by_key(|(_, ip, _)| node.pod_metric(ip, 9601, "herald_connected").unwrap_or(0.0) as u64)
        .expect("pods");
    let deleted_at = now_ms();
    node.kubectl_ok(&["delete", "pod", victim, "-n", NS, "--force", "--grace-period=0"]);
    let summary = fleet.line("summary");
    let clients = summary["clients"].as_array().expect("clients");
    let dropped: Vec<&str> =
        clients.iter().filter(|c| c["dropped"] == true).map(|c| c["user"].as_str().unwrap_or("")).collect();
    let survivors: Vec<&Value> = clients.iter().filter(|c| c["dropped"] == false).collect();
    assert!(!dropped.is_empty() && !survivors.is_empty(), "clients on both pods: {summary}");
    let mut slowest = 0;
    for s in &survivors {
        for user in &dropped {
            let at = s["removed"][*user]
                .as_i64()
                .unwrap_or_else(|| panic!("{} saw {user} leave: {summary}", s["user"]));
            slowest = slowest.max(at - deleted_at);
        }
        for (user, _) in s["removed"].as_object().expect("removed") {
            assert!(
                dropped.contains(&user.as_str()),
                "member_removed only for the dead pod's members: {summary}"
            );
        }
    }
    // The kubelet kills a force-deleted pod's container up to 2 s after the delete (its minimum
    // grace: SIGTERM, then SIGKILL). The 10 s lease was renewed at most 3.3 s before that, so it
    // lapses within 10 s of the kill, and the survivors' reaper (every 3.3 s) finds it within
    // 3.3 s more: 15.3 s after the delete, plus delivery. (16 s left 0.7 s; a run took 14.0 s.)
    assert!(slowest <= 17_000, "member_removed after {slowest} ms");
    assert!(fleet.finish());
    wait_ready_replicas(node, 2);
    println!(
        "scenario 4: {} members of the force-deleted pod removed on {} surviving clients within {slowest} ms; Deployment back to 2",
        dropped.len(),
        survivors.len()
    );
}

/// Largest number of `times` within any `window` ms.
fn densest(times: &[i64], window: i64) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    (0..sorted.len())
        .map(|i| sorted[i..].iter().take_while(|t| **t - sorted[i] < window).count())
        .max()
        .unwrap_or(0)
}

/// Scenario 3: a spec change rolls the pods; each drains with 4200, spread out; clients
/// reconnect to the other pods; the PDB / maxUnavailable 0 keep a pod serving throughout.
fn a_rolling_update_drains_spread_out_behind_the_pdb(node: &KubeNode, service: &Service) {
    let mut fleet =
        node.script("k8s-fleet.mjs", &fleet_config(service, "second-secret-e83f0b12", 45, 20, false));
    fleet.line("ready");
    let rolled_at = now_ms();
    node.kubectl_ok(&[
        "patch",
        "pushercluster",
        "realtime",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"server":{"activityTimeout":100}}}"#,
    ]);
    // Ready pods never drop below one while the roll runs.
    let mut least_ready = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let ready: usize =
            node.jsonpath(NS, "deployment/realtime", "{.status.readyReplicas}").parse().unwrap_or(0);
        least_ready = least_ready.min(ready);
        let updated = node.jsonpath(NS, "deployment/realtime", "{.status.updatedReplicas}");
        if updated == "2" && ready == 2 && server_pods(node).len() == 2 && now_ms() - rolled_at > 5_000 {
            break;
        }
        assert!(Instant::now() < deadline, "the roll finished");
        std::thread::sleep(Duration::from_millis(300));
    }
    let summary = fleet.line("summary");
    assert!(fleet.finish());
    let closes = summary["closes"].as_array().expect("closes");
    assert!(!closes.is_empty(), "the roll closed sockets: {summary}");
    assert!(closes.iter().all(|c| c["code"] == 4200), "every close was 4200: {summary}");
    let times: Vec<i64> = closes.iter().filter_map(|c| c["at"].as_i64()).collect();
    let burst = densest(&times, 250);
    assert!(burst * 2 <= CLIENTS, "closes spread over the drain, not at once: {burst} within 250 ms");
    let clients = summary["clients"].as_array().expect("clients");
    assert!(clients.iter().all(|c| c["state"] == "connected"), "every client reconnected: {summary}");
    assert_eq!(summary["publishErrors"], 0, "the HTTP API answered throughout: {summary}");
    assert!(least_ready >= 1, "a pod served throughout");
    let sent = summary["sent"].as_i64().unwrap_or(0);
    let received: i64 = clients.iter().map(|c| c["received"].as_i64().unwrap_or(0)).sum();
    let reconnects = summary["reconnects"].as_array().map_or(0, Vec::len);
    let first = times.iter().min().copied().unwrap_or(0) - rolled_at;
    let last = times.iter().max().copied().unwrap_or(0) - rolled_at;
    println!(
        "scenario 3: rolling update: {} closes (all 4200) from {first} to {last} ms after the patch, at most {burst} in any 250 ms; {reconnects} reconnects; {} of {} deliveries lost ({sent} events x {CLIENTS} clients at 20/s); fewest ready pods {least_ready}",
        closes.len(),
        sent * CLIENTS as i64 - received,
        sent * CLIENTS as i64
    );
}

/// Scenario 7: the operator pod deleted, a new one resumes; an owned Service deleted by hand
/// is back within 10 s.
fn the_operator_pod_replaced_resumes_and_restores_a_deleted_service(node: &KubeNode) {
    node.kubectl_ok(&[
        "delete",
        "pod",
        "-n",
        "herald-system",
        "-l",
        "app.kubernetes.io/name=herald-operator",
        "--wait=false",
    ]);
    operator_rolled_out(node);
    poll("the new operator pod is Ready", Duration::from_secs(60), || {
        let out = node.jsonpath(
            "herald-system",
            "pods",
            "{range .items[*]}{.metadata.deletionTimestamp}{.status.conditions[?(@.type==\"Ready\")].status} {end}",
        );
        (out.split_whitespace().count() == 1 && out.trim() == "True").then_some(())
    });
    let old_uid = node.jsonpath(NS, "service/realtime", "{.metadata.uid}");
    let deleted = Instant::now();
    node.kubectl_ok(&["delete", "service", "realtime", "-n", NS]);
    poll("the operator restores the Service", Duration::from_secs(30), || {
        let (ok, uid) =
            node.kubectl(&["get", "service", "realtime", "-n", NS, "-o", "jsonpath={.metadata.uid}"]);
        (ok && !uid.is_empty() && uid != old_uid).then_some(())
    });
    let took = deleted.elapsed();
    println!("scenario 7: operator pod replaced; deleted Service restored after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
