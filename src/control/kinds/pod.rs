//! core/v1 Pod: the API server's defaults and validation of pod specs (also
//! used for the templates of workloads), and `kubectl get pods` columns.

use std::collections::HashSet;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe};
use serde_json::Value;

use super::validate::{dns1123_label, port, FieldError};
use super::{age_cell, name_cell, Column, KindRules};

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

fn default_probe(probe: &mut Option<Probe>) {
    if let Some(p) = probe {
        p.timeout_seconds.get_or_insert(1);
        p.period_seconds.get_or_insert(10);
        p.success_threshold.get_or_insert(1);
        p.failure_threshold.get_or_insert(3);
        if let Some(h) = &mut p.http_get {
            h.scheme.get_or_insert_with(|| "HTTP".into());
            h.path.get_or_insert_with(|| "/".into());
        }
    }
}

fn default_container(c: &mut Container) {
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    if c.image_pull_policy.is_none() {
        let image = c.image.as_deref().unwrap_or("");
        let tagged = image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'));
        let latest = image.ends_with(":latest");
        c.image_pull_policy = Some(
            if !tagged || latest {
                "Always"
            } else {
                "IfNotPresent"
            }
            .into(),
        );
    }
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
    }
    default_probe(&mut c.readiness_probe);
    default_probe(&mut c.liveness_probe);
    default_probe(&mut c.startup_probe);
}

/// The API server's defaults for a pod spec.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.enable_service_links.get_or_insert(true);
    spec.security_context.get_or_insert_with(Default::default);
    for c in spec.containers.iter_mut() {
        default_container(c);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        default_container(c);
    }
}

fn validate_probe(probe: Option<&Probe>, path: &str, errors: &mut Vec<FieldError>) {
    let Some(p) = probe else { return };
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
        p.grpc.is_some(),
    ];
    if handlers.iter().filter(|h| **h).count() != 1 {
        errors.push(FieldError::required(format!(
            "{path}.exec/httpGet/tcpSocket: must specify exactly one handler type"
        )));
    }
    for (value, name) in [
        (p.timeout_seconds, "timeoutSeconds"),
        (p.period_seconds, "periodSeconds"),
        (p.success_threshold, "successThreshold"),
        (p.failure_threshold, "failureThreshold"),
    ] {
        if value.is_some_and(|v| v < 1) {
            errors.push(FieldError::invalid(
                format!("{path}.{name}"),
                value.unwrap_or(0),
                "must be greater than or equal to 1",
            ));
        }
    }
    if p.initial_delay_seconds.is_some_and(|v| v < 0) {
        errors.push(FieldError::invalid(
            format!("{path}.initialDelaySeconds"),
            p.initial_delay_seconds.unwrap_or(0),
            "must be greater than or equal to 0",
        ));
    }
}

fn validate_container(c: &Container, path: &str, errors: &mut Vec<FieldError>) {
    if c.name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name")));
    } else if let Some(why) = dns1123_label(&c.name) {
        errors.push(FieldError::invalid(
            format!("{path}.name"),
            format!("\"{}\"", c.name),
            &why,
        ));
    }
    if c.image.as_deref().unwrap_or("").is_empty() {
        errors.push(FieldError::required(format!("{path}.image")));
    }
    let mut names = HashSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        errors.extend(port(
            p.container_port,
            &format!("{path}.ports[{i}].containerPort"),
        ));
        if let Some(hp) = p.host_port {
            errors.extend(port(hp, &format!("{path}.ports[{i}].hostPort")));
        }
        if let Some(proto) = &p.protocol {
            if !PROTOCOLS.contains(&proto.as_str()) {
                errors.push(FieldError::not_supported(
                    format!("{path}.ports[{i}].protocol"),
                    proto,
                    PROTOCOLS,
                ));
            }
        }
        if let Some(n) = &p.name {
            if !names.insert(n.clone()) {
                errors.push(FieldError::duplicate(
                    format!("{path}.ports[{i}].name"),
                    format!("\"{n}\""),
                ));
            }
        }
    }
    let mut env = HashSet::new();
    for (i, e) in c.env.iter().flatten().enumerate() {
        if e.name.is_empty() {
            errors.push(FieldError::required(format!("{path}.env[{i}].name")));
        }
        let _ = env.insert(&e.name);
    }
    validate_probe(
        c.readiness_probe.as_ref(),
        &format!("{path}.readinessProbe"),
        errors,
    );
    validate_probe(
        c.liveness_probe.as_ref(),
        &format!("{path}.livenessProbe"),
        errors,
    );
    validate_probe(
        c.startup_probe.as_ref(),
        &format!("{path}.startupProbe"),
        errors,
    );
}

/// Checks a pod spec at `path` (`spec`, `spec.template.spec`).
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if spec.containers.is_empty() {
        errors.push(FieldError::required(format!("{path}.containers")));
    }
    let mut names = HashSet::new();
    let all = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{path}.containers[{i}]"), c))
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, c)| (format!("{path}.initContainers[{i}]"), c)),
        );
    for (cpath, c) in all {
        validate_container(c, &cpath, &mut errors);
        if !c.name.is_empty() && !names.insert(c.name.clone()) {
            errors.push(FieldError::duplicate(
                format!("{cpath}.name"),
                format!("\"{}\"", c.name),
            ));
        }
    }
    if let Some(rp) = &spec.restart_policy {
        if !RESTART_POLICIES.contains(&rp.as_str()) {
            errors.push(FieldError::not_supported(
                format!("{path}.restartPolicy"),
                rp,
                RESTART_POLICIES,
            ));
        }
    }
    if spec.termination_grace_period_seconds.is_some_and(|g| g < 0) {
        errors.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            spec.termination_grace_period_seconds.unwrap_or(0),
            "must be greater than or equal to 0",
        ));
    }
    validate_volumes(spec, path, &mut errors);
    if let Some(h) = &spec.hostname {
        if let Some(why) = dns1123_label(h) {
            errors.push(FieldError::invalid(
                format!("{path}.hostname"),
                format!("\"{h}\""),
                &why,
            ));
        }
    }
    errors
}

/// Volumes: unique names, exactly one source of a kind podnet serves
/// (others, such as `persistentVolumeClaim`, are refused here with the
/// list of supported ones), and mounts naming a volume, at absolute and
/// distinct paths.
fn validate_volumes(spec: &PodSpec, path: &str, errors: &mut Vec<FieldError>) {
    use crate::control::reconcile::pod_volumes::SUPPORTED;
    let mut names = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let vpath = format!("{path}.volumes[{i}]");
        if let Some(why) = dns1123_label(&v.name) {
            errors.push(FieldError::invalid(
                format!("{vpath}.name"),
                format!("\"{}\"", v.name),
                &why,
            ));
        } else if !names.insert(v.name.as_str()) {
            errors.push(FieldError::duplicate(
                format!("{vpath}.name"),
                format!("\"{}\"", v.name),
            ));
        }
        let ours = [
            v.config_map.is_some(),
            v.secret.is_some(),
            v.empty_dir.is_some(),
            v.host_path.is_some(),
            v.downward_api.is_some(),
            v.projected.is_some(),
            v.persistent_volume_claim.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let json = serde_json::to_value(v).unwrap_or_default();
        let kinds: Vec<String> = json
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .filter(|k| k != "name")
            .collect();
        if kinds.len() > ours || kinds.is_empty() {
            let other = kinds
                .iter()
                .find(|k| !SUPPORTED.contains(&k.as_str()))
                .cloned()
                .unwrap_or_default();
            errors.push(FieldError::not_supported(vpath.clone(), &other, SUPPORTED));
        } else if ours > 1 {
            errors.push(FieldError::invalid(
                vpath,
                kinds.join(", "),
                "may not specify more than 1 volume type",
            ));
        }
    }
    for (ci, c) in spec.containers.iter().enumerate() {
        let mut paths = HashSet::new();
        for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
            let mpath = format!("{path}.containers[{ci}].volumeMounts[{i}]");
            if !names.contains(m.name.as_str()) {
                errors.push(FieldError::invalid(
                    format!("{mpath}.name"),
                    format!("\"{}\"", m.name),
                    "not found",
                ));
            }
            if !m.mount_path.starts_with('/') {
                errors.push(FieldError::invalid(
                    format!("{mpath}.mountPath"),
                    format!("\"{}\"", m.mount_path),
                    "must be an absolute path on podnet (pods share the host's filesystem)",
                ));
            } else if !paths.insert(m.mount_path.trim_end_matches('/')) {
                errors.push(FieldError::invalid(
                    format!("{mpath}.mountPath"),
                    format!("\"{}\"", m.mount_path),
                    "must be unique",
                ));
            }
            if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                let bad = sub.starts_with('/') || sub.split('/').any(|p| p == "..");
                if bad {
                    errors.push(FieldError::invalid(
                        format!("{mpath}.subPath"),
                        format!("\"{sub}\""),
                        "must be a relative path without '..'",
                    ));
                }
            }
        }
    }
}

/// The spec without what an update may change (images, deadlines,
/// tolerations), to compare an update against the old pod.
fn immutable_part(spec: &PodSpec) -> PodSpec {
    let mut s = spec.clone();
    for c in s
        .containers
        .iter_mut()
        .chain(s.init_containers.iter_mut().flatten())
    {
        c.image = None;
    }
    s.active_deadline_seconds = None;
    s.tolerations = None;
    s
}

/// `READY` as kubectl shows it: ready containers / containers.
pub fn ready_cell(pod: &Pod) -> String {
    let total = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().filter(|c| c.ready).count());
    format!("{ready}/{total}")
}

/// `STATUS` as kubectl shows it: the phase, or a container's waiting or
/// terminated reason, or Terminating.
pub fn status_cell(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let status = pod.status.as_ref();
    let mut shown = status
        .and_then(|s| s.reason.clone())
        .or_else(|| status.and_then(|s| s.phase.clone()))
        .unwrap_or_else(|| "Pending".into());
    for c in status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
    {
        let state = c.state.as_ref();
        if let Some(r) = state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone())
        {
            shown = r;
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            shown = t
                .reason
                .clone()
                .unwrap_or_else(|| format!("ExitCode:{}", t.exit_code));
        }
    }
    shown
}

impl KindRules for Pod {
    const SHORT_NAMES: &'static [&'static str] = &["po"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const STATUS: bool = true;
    const GENERATION: bool = true;
    const FIELDS: &'static [&'static str] = &[
        "spec.nodeName",
        "status.phase",
        "status.podIP",
        "spec.restartPolicy",
    ];

    fn default_fields(&mut self) {
        default_pod_spec(self.spec.get_or_insert_with(Default::default));
    }

    fn validate(&self, old: Option<&Self>) -> Vec<FieldError> {
        let Some(spec) = &self.spec else {
            return vec![FieldError::required("spec")];
        };
        let mut errors = validate_pod_spec(spec, "spec");
        if let Some(old_spec) = old.and_then(|o| o.spec.as_ref()) {
            let mut new_part = immutable_part(spec);
            // Binding (an unset nodeName set once) is what the scheduler
            // does through `pods/binding`; allowed here on update.
            if old_spec.node_name.is_none() {
                new_part.node_name = None;
            }
            if immutable_part(old_spec) != new_part {
                errors.push(FieldError::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` (only additions to existing tolerations)",
                ));
            }
        }
        errors
    }

    fn columns() -> &'static [Column] {
        const C: &[Column] = &[
            Column::NAME,
            Column::new("Ready", "string"),
            Column::new("Status", "string"),
            Column::new("Restarts", "string"),
            Column::AGE,
            Column::wide("IP", "string"),
            Column::wide("Node", "string"),
            Column::wide("Nominated Node", "string"),
            Column::wide("Readiness Gates", "string"),
        ];
        C
    }

    fn cells(&self, now: SystemTime) -> Vec<Value> {
        let status = self.status.as_ref();
        let restarts: i32 = status
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum());
        vec![
            name_cell(&self.metadata),
            ready_cell(self).into(),
            status_cell(self).into(),
            restarts.to_string().into(),
            age_cell(&self.metadata, now),
            status
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_else(|| "<none>".into())
                .into(),
            self.spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_else(|| "<none>".into())
                .into(),
            "<none>".into(),
            "<none>".into(),
        ]
    }
}

#[cfg(test)]
mod volume_tests {
    use super::*;

    fn errors(spec: serde_json::Value) -> Vec<String> {
        let spec: PodSpec = serde_json::from_value(spec).unwrap();
        validate_pod_spec(&spec, "spec")
            .into_iter()
            .map(|e| format!("{e:?}"))
            .collect()
    }

    #[test]
    fn unsupported_volumes_and_bad_mounts_are_refused() {
        let c = |mounts: serde_json::Value| serde_json::json!([{"name": "c", "image": "x", "volumeMounts": mounts}]);
        let ok = errors(serde_json::json!({
            "volumes": [{"name": "a", "configMap": {"name": "x"}}, {"name": "b", "emptyDir": {}}],
            "containers": c(serde_json::json!([{"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b", "subPath": "s"}])),
        }));
        assert!(ok.is_empty(), "{ok:?}");
        let nfs = errors(serde_json::json!({
            "volumes": [{"name": "d", "nfs": {"server": "s", "path": "/x"}}],
            "containers": c(serde_json::json!([])),
        }));
        assert_eq!(nfs.len(), 1, "{nfs:?}");
        assert!(
            nfs[0].contains("nfs") && nfs[0].contains("persistentVolumeClaim"),
            "{nfs:?}"
        );
        let bad = errors(serde_json::json!({
            "volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}],
            "containers": c(serde_json::json!([
                {"name": "zz", "mountPath": "/x"},
                {"name": "a", "mountPath": "rel"},
                {"name": "a", "mountPath": "/y", "subPath": "../up"},
                {"name": "a", "mountPath": "/y"},
            ])),
        }));
        let text = bad.join("\n");
        for want in [
            "volumes[1].name",
            "volumeMounts[0].name",
            "volumeMounts[1].mountPath",
            "volumeMounts[2].subPath",
            "volumeMounts[3].mountPath",
        ] {
            assert!(text.contains(want), "{want} missing in {text}");
        }
    }
}
