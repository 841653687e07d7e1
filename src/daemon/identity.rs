//! A pod's identity files, as the kubelet writes them: its host name,
//! `/etc/hosts` (`managedHostsFileContent`) and `/etc/resolv.conf`
//! (`dnsPolicy` and `dnsConfig`, as the kubelet's DNS configurer merges
//! them). Pure functions of the pod: the runtime writes the files under
//! `STATE/pods/UID/` and binds them into the pod's mount namespace.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The kubelet's limits: 3 nameservers, 32 search domains.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The pod's host name (`spec.hostname`, else its name), cut to 63
/// characters without a trailing `-` or `.` as the kubelet cuts it.
pub fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    if name.len() <= 63 {
        return name;
    }
    name[..63].trim_end_matches(['-', '.']).to_string()
}

/// The pod's domain (`SUBDOMAIN.NS.svc.cluster.local`) when it has a
/// `spec.subdomain`.
pub fn domain(pod: &Pod) -> Option<String> {
    let sub = pod
        .spec
        .as_ref()?
        .subdomain
        .clone()
        .filter(|s| !s.is_empty())?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{sub}.{ns}.svc.{CLUSTER_DOMAIN}"))
}

/// `/etc/hosts` of a pod with addresses `ips`.
pub fn hosts_file(pod: &Pod, ips: &[IpAddr]) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file.\n");
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    let host = hostname(pod);
    for ip in ips {
        match domain(pod) {
            Some(d) => out.push_str(&format!("{ip}\t{host}.{d}\t{host}\n")),
            None => out.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.unwrap_or_default().join("\t")
            ));
        }
    }
    out
}

/// A resolver configuration: nameservers, search domains, options.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines.
    pub nameservers: Vec<String>,
    /// The `search` line.
    pub searches: Vec<String>,
    /// The `options` line (`ndots:5`, `edns0`).
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses a resolv.conf (the node's).
    pub fn parse(text: &str) -> ResolvConf {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.next().map(str::to_string)),
                // The last search (or domain) line wins, as in glibc.
                Some("search" | "domain") => r.searches = words.map(str::to_string).collect(),
                Some("options") => r.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        r
    }

    /// The file, as the container runtime writes it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Merges options: one of the pod's replaces the node's of the same name.
fn merge_options(base: Vec<String>, extra: &[(String, Option<String>)]) -> Vec<String> {
    let name_of = |o: &str| o.split(':').next().unwrap_or("").to_string();
    let mut out: Vec<String> = Vec::new();
    let rendered = extra.iter().map(|(n, v)| match v {
        Some(v) => format!("{n}:{v}"),
        None => n.clone(),
    });
    for o in base.into_iter().chain(rendered) {
        let n = name_of(&o);
        match out.iter_mut().find(|x| name_of(x) == n) {
            Some(slot) => *slot = o,
            None => out.push(o),
        }
    }
    out
}

/// The pod's `/etc/resolv.conf`: `ClusterFirst` (the default: the cluster
/// DNS, the cluster search path then the node's, `ndots:5`), `Default`
/// (the node's), `None` (`dnsConfig` alone), and `dnsConfig` merged in.
pub fn resolv_conf(pod: &Pod, cluster_dns: IpAddr, node: &ResolvConf) -> ResolvConf {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let host_network = spec.host_network == Some(true);
    let mut r = match policy {
        "None" => ResolvConf::default(),
        "Default" => node.clone(),
        "ClusterFirst" if host_network => node.clone(),
        _ => {
            let mut searches = vec![
                format!("{ns}.svc.{CLUSTER_DOMAIN}"),
                format!("svc.{CLUSTER_DOMAIN}"),
                CLUSTER_DOMAIN.to_string(),
            ];
            searches.extend(node.searches.iter().cloned());
            ResolvConf {
                nameservers: vec![cluster_dns.to_string()],
                searches,
                options: vec!["ndots:5".into()],
            }
        }
    };
    if let Some(cfg) = &spec.dns_config {
        r.nameservers
            .extend(cfg.nameservers.iter().flatten().cloned());
        r.searches.extend(cfg.searches.iter().flatten().cloned());
        let extra: Vec<(String, Option<String>)> = cfg
            .options
            .iter()
            .flatten()
            .filter_map(|o| Some((o.name.clone()?, o.value.clone())))
            .collect();
        r.options = merge_options(std::mem::take(&mut r.options), &extra);
    }
    r.nameservers = dedup(r.nameservers);
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches = dedup(r.searches);
    r.searches.truncate(MAX_SEARCHES);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "x"}]);
        serde_json::from_value(
            json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    const IP: &str = "10.244.0.7";

    #[test]
    fn hosts_file_as_the_kubelet_writes_it() {
        let ip: IpAddr = IP.parse().unwrap();
        assert_eq!(
            hosts_file(&pod(json!({})), &[ip]),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.244.0.7\tweb-0\n"
        );
        let p = pod(json!({
            "hostname": "db", "subdomain": "cluster",
            "hostAliases": [{"ip": "192.0.2.9", "hostnames": ["foo.local", "bar.local"]}],
        }));
        let text = hosts_file(&p, &[ip]);
        assert!(
            text.contains("\n10.244.0.7\tdb.cluster.shop.svc.cluster.local\tdb\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\n\n# Entries added by HostAliases.\n192.0.2.9\tfoo.local\tbar.local\n"
            ),
            "{text}"
        );
        assert_eq!(hostname(&p), "db");
        let long = "a".repeat(62) + "-b";
        assert_eq!(hostname(&pod(json!({"hostname": long}))), "a".repeat(62));
    }

    #[test]
    fn resolv_conf_follows_dns_policy_and_dns_config() {
        let dns: IpAddr = "10.96.0.10".parse().unwrap();
        let node = ResolvConf::parse(
            "# comment\nnameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch corp.example\noptions edns0 ndots:2\n",
        );
        assert_eq!(
            resolv_conf(&pod(json!({})), dns, &node).render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf(&pod(json!({"dnsPolicy": "Default"})), dns, &node).render(),
            "search corp.example\nnameserver 192.0.2.53\nnameserver 192.0.2.54\noptions edns0 ndots:2\n"
        );
        let none = pod(json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "1"}, {"name": "edns0"}]}}));
        assert_eq!(
            resolv_conf(&none, dns, &node).render(),
            "search a.example\nnameserver 1.1.1.1\noptions ndots:1 edns0\n"
        );
        let merged = pod(json!({"dnsConfig": {
            "nameservers": ["10.96.0.10", "192.0.2.1"], "searches": ["cluster.local", "x.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "timeout", "value": "1"}]}}));
        assert_eq!(
            resolv_conf(&merged, dns, &ResolvConf::default()).render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local x.example\nnameserver 10.96.0.10\nnameserver 192.0.2.1\noptions ndots:2 timeout:1\n"
        );
    }
}
