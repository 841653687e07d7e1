//! Admission steps that hand out what a new object needs at once: the
//! node a pod runs on ([`NodeBinder`]), and cluster IPs.
//!
//! Cluster IPs: handed out when a Service is created, as the API server's
//! allocator does, so that `kubectl get svc` shows the address at once.
//!
//! The allocator is an [`Admission`] step of the object store: it sees a
//! Service before it is written (and may refuse it) and after it is
//! removed. The set of addresses in use is built from the stored Services
//! at start and kept in memory; allocation takes the next free address
//! after the last one handed out (from `.10` up, as kubeadm clusters
//! number theirs), so a freed address is not reused at once.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::kinds::{FieldError, Kind};
use super::objects::{Admission, ObjectError, Objects};

/// The first offset handed out automatically in the service CIDR.
pub const FIRST_OFFSET: u32 = 10;

/// Cluster IP allocation from a service CIDR.
pub struct ClusterIps {
    cidr: Ipv4Net,
    state: Mutex<State>,
}

struct State {
    used: BTreeSet<u32>,
    next: u32,
}

fn invalid(name: &str, ip: &str, why: String) -> ObjectError {
    ObjectError::Invalid {
        kind: "Service".into(),
        name: name.into(),
        causes: vec![FieldError::invalid(
            "spec.clusterIPs",
            format!("[\"{ip}\"]"),
            &format!("failed to allocate IP {ip}: {why}"),
        )],
    }
}

impl ClusterIps {
    /// An allocator over `cidr` that knows the addresses stored Services hold.
    pub fn new(cidr: Ipv4Net, objects: &Objects) -> Self {
        let base = cidr.network().to_bits();
        let used = objects
            .list_as::<Service>(None, &Default::default())
            .iter()
            .filter_map(|s| {
                s.spec
                    .as_ref()?
                    .cluster_ip
                    .as_ref()?
                    .parse::<Ipv4Addr>()
                    .ok()
            })
            .filter(|ip| cidr.contains(ip))
            .map(|ip| ip.to_bits() - base)
            .collect();
        Self {
            cidr,
            state: Mutex::new(State {
                used,
                next: FIRST_OFFSET,
            }),
        }
    }

    fn size(&self) -> u32 {
        (1u64 << (32 - self.cidr.prefix_len())).min(u32::MAX as u64) as u32
    }

    fn offset_of(&self, ip: &str) -> Option<u32> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        self.cidr
            .contains(&ip)
            .then(|| ip.to_bits() - self.cidr.network().to_bits())
    }

    fn take(&self, name: &str, requested: Option<&str>) -> Result<Ipv4Addr, ObjectError> {
        let base = self.cidr.network().to_bits();
        let size = self.size();
        let mut st = self.state.lock();
        if let Some(text) = requested {
            let off = self.offset_of(text).filter(|o| *o > 0 && *o < size - 1).ok_or_else(|| {
                invalid(name, text, format!("the provided IP is not in the valid range; the range of valid IPs is {}", self.cidr))
            })?;
            if !st.used.insert(off) {
                return Err(invalid(
                    name,
                    text,
                    "provided IP is already allocated".into(),
                ));
            }
            return Ok(Ipv4Addr::from(base + off));
        }
        let span = size.saturating_sub(FIRST_OFFSET + 1);
        for i in 0..span {
            let off = FIRST_OFFSET + (st.next - FIRST_OFFSET + i) % span.max(1);
            if st.used.insert(off) {
                st.next = off + 1;
                return Ok(Ipv4Addr::from(base + off));
            }
        }
        Err(ObjectError::Forbidden(format!(
            "the service CIDR {} has no free cluster IP; delete services or widen --service-cidr",
            self.cidr
        )))
    }

    fn free(&self, ip: &str) {
        if let Some(off) = self.offset_of(ip) {
            self.state.lock().used.remove(&off);
        }
    }
}

fn cluster_ip(obj: &Value) -> Option<&str> {
    obj.pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

impl Admission for ClusterIps {
    fn admit(&self, kind: &Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ObjectError> {
        if !kind.is::<Service>() {
            return Ok(());
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let external_name =
            obj.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
        if let Some(old) = old {
            // An update keeps the address; a client that left it out (a
            // PUT of what it applied) gets it filled in.
            if let Some(ip) = cluster_ip(old) {
                if obj
                    .pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    obj["spec"]["clusterIP"] = ip.into();
                    obj["spec"]["clusterIPs"] = json!([ip]);
                }
            }
            return Ok(());
        }
        if external_name || obj.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None") {
            if !external_name {
                obj["spec"]["clusterIPs"] = json!(["None"]);
            }
            return Ok(());
        }
        let requested = cluster_ip(obj).map(str::to_string);
        let ip = self.take(&name, requested.as_deref())?.to_string();
        obj["spec"]["clusterIP"] = ip.clone().into();
        obj["spec"]["clusterIPs"] = json!([ip]);
        obj["spec"]["ipFamilies"] = json!(["IPv4"]);
        obj["spec"]["ipFamilyPolicy"] = "SingleStack".into();
        Ok(())
    }

    fn abandoned(&self, kind: &Kind, obj: &Value) {
        if kind.is::<Service>() {
            if let Some(ip) = cluster_ip(obj) {
                self.free(ip);
            }
        }
    }
}

/// Binds a pod created without `spec.nodeName` to this node, as a
/// single-node cluster's scheduler would: the kubelet can start it without
/// a write of its own first.
pub struct NodeBinder {
    /// This node's name.
    pub node: String,
}

impl Admission for NodeBinder {
    fn admit(&self, kind: &Kind, obj: &mut Value, old: Option<&Value>) -> Result<(), ObjectError> {
        if old.is_none() && kind.kind == "Pod" {
            let bound = obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !bound {
                if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("nodeName".into(), self.node.clone().into());
                }
            }
        }
        Ok(())
    }

    fn abandoned(&self, _kind: &Kind, _obj: &Value) {}
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;
    use crate::control::kinds;
    use crate::control::objects::{DeleteOptions, WriteOptions};
    use crate::control::store::MemStore;

    fn svc(name: &str, ip: Option<&str>) -> Value {
        let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}});
        if let Some(ip) = ip {
            s["spec"]["clusterIP"] = ip.into();
        }
        s
    }

    #[test]
    fn cluster_ips_are_handed_out_once_and_kept() {
        let kv = Arc::new(MemStore::new());
        let cidr: Ipv4Net = "10.96.0.0/28".parse().unwrap();
        let base = Objects::new(kv.clone(), SystemTime::now()).unwrap();
        let o = base
            .clone()
            .with_admission(Arc::new(ClusterIps::new(cidr, &base)));
        let k = kinds::of::<Service>();
        let now = SystemTime::now();
        let a = o
            .create(
                k,
                Some("default"),
                svc("a", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        let e = o
            .create(
                k,
                Some("default"),
                svc("b", Some("10.96.0.10")),
                WriteOptions::default(),
                now,
            )
            .unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(e.to_string().contains("already allocated"), "{e}");
        let e = o
            .create(
                k,
                Some("default"),
                svc("b", Some("10.97.0.1")),
                WriteOptions::default(),
                now,
            )
            .unwrap_err();
        assert!(e.to_string().contains("valid range"), "{e}");
        let b = o
            .create(
                k,
                Some("default"),
                svc("b", Some("10.96.0.3")),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.3");
        let h = o
            .create(
                k,
                Some("default"),
                svc("h", Some("None")),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(h["spec"]["clusterIP"], "None");
        // An update without the address keeps it.
        let mut put = a.clone();
        put["spec"].as_object_mut().unwrap().remove("clusterIP");
        put["spec"].as_object_mut().unwrap().remove("clusterIPs");
        let put = o
            .update(k, Some("default"), "a", put, None, WriteOptions::default())
            .unwrap();
        assert_eq!(put["spec"]["clusterIP"], "10.96.0.10");
        // A failed create (already exists) and a dry run take nothing.
        assert!(o
            .create(
                k,
                Some("default"),
                svc("a", None),
                WriteOptions::default(),
                now
            )
            .is_err());
        let dry = o
            .create(
                k,
                Some("default"),
                svc("d", None),
                WriteOptions {
                    dry_run: true,
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(dry["spec"]["clusterIP"], "10.96.0.11");
        let c = o
            .create(
                k,
                Some("default"),
                svc("c", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(
            c["spec"]["clusterIP"], "10.96.0.12",
            "not reused at once after the dry run"
        );
        // Deleted: free again, after the others; a restart sees what is held.
        o.delete(k, Some("default"), "a", DeleteOptions::default(), now)
            .unwrap();
        let again = ClusterIps::new(cidr, &base);
        assert!(again.state.lock().used.contains(&12) && !again.state.lock().used.contains(&10));
        let d = o
            .create(
                k,
                Some("default"),
                svc("d", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(d["spec"]["clusterIP"], "10.96.0.13");
        // /28: offsets 10..=14 are automatic; 14 then wraps to the freed 10.
        let e = o
            .create(
                k,
                Some("default"),
                svc("e", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(e["spec"]["clusterIP"], "10.96.0.14");
        let f = o
            .create(
                k,
                Some("default"),
                svc("f", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(f["spec"]["clusterIP"], "10.96.0.10");
        let g = o
            .create(
                k,
                Some("default"),
                svc("g", None),
                WriteOptions::default(),
                now,
            )
            .unwrap();
        assert_eq!(
            g["spec"]["clusterIP"], "10.96.0.11",
            "the one the dry run showed and left"
        );
        let full = o
            .create(
                k,
                Some("default"),
                svc("i", None),
                WriteOptions::default(),
                now,
            )
            .unwrap_err();
        assert_eq!(full.code(), 403);
    }
}
