//! `podnet`: shortcuts over podnetd's Kubernetes API, and what kubectl has
//! no verb for (the NAT table, tracked flows, counters, entering a pod's
//! namespace, resetting the host).
//!
//! Thin by design: parse the command line, build the Kubernetes object
//! (`k8s-openapi` types), send it over the daemon's root-only Unix socket
//! with [`podnet::api::ApiClient`], and print what kubectl prints: the
//! server's own `Table` columns (default; `-o wide` adds the wide ones),
//! or the object as JSON. Failures print `error: ...` on stderr and exit 1
//! (usage errors exit 2, from clap); `pod exec` exits with the command's
//! own status.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Serialize;
use serde_json::{json, Value};

use podnet::api::node::{ConntrackEntry, NatRule};
use podnet::api::{
    parse_label, parse_port_spec, parse_selector, path_segment, ApiClient, ClientError, Labels,
    DEFAULT_SOCKET,
};
use podnet::daemon::runtime::{netns_name, ATTACH_NETNS_ANNOTATION};

/// Kubernetes-style pods, services and NAT on one Linux host: shortcuts
/// over podnetd's Kubernetes API (kubectl works too).
#[derive(Debug, Parser)]
#[command(name = "podnet", version, propagate_version = true)]
struct Cli {
    /// The podnetd API socket.
    #[arg(long, global = true, env = "PODNET_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// The Kubernetes namespace of the objects.
    #[arg(short = 'n', long, global = true, default_value = "default")]
    namespace: String,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned columns, as `kubectl get` shows them.
    Table,
    /// Aligned columns, with the wide ones.
    Wide,
    /// Pretty JSON of the object or list, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pods: a network namespace with its own IP running a process.
    #[command(subcommand, visible_aliases = ["pods", "po"])]
    Pod(PodCommand),
    /// Deployments: N interchangeable pods, replaced when they die.
    #[command(subcommand, visible_aliases = ["deployments", "deploy"])]
    Deployment(DeploymentCommand),
    /// StatefulSets: N ordered pods NAME-0, NAME-1, ... that keep their addresses.
    #[command(subcommand, visible_aliases = ["statefulsets", "sts"])]
    Statefulset(StatefulSetCommand),
    /// Services: a permanent virtual IP load-balanced over matching pods.
    #[command(subcommand, visible_aliases = ["services", "svc"])]
    Service(ServiceCommand),
    /// The service NAT table, like `iptables -t nat -L`.
    #[command(subcommand)]
    Nat(ListOnly),
    /// Live flows, like `conntrack -L`.
    #[command(subcommand)]
    Conntrack(ListOnly),
    /// Packets forwarded and dropped (by reason), flows tracked.
    Stats,
    /// What the fast path would do with a new flow: the service and
    /// backend it reaches, the NAT, which NetworkPolicy allows or denies
    /// it, and the verdict. Changes nothing.
    Explain {
        /// Source address, `IP` or `IP:PORT` (the port picks a service's
        /// backend; 40000 when not given).
        #[arg(value_name = "SRC")]
        src: String,
        /// Destination address (a pod, a service's cluster IP, ...).
        #[arg(value_name = "DST")]
        dst: String,
        /// `PORT/PROTO`: `80/TCP`, `53/UDP`, `icmp` (TCP when only a port).
        #[arg(value_name = "PORT/PROTO")]
        port: String,
    },
    /// Apply a manifest (multi-document YAML, as `kubectl apply -f`).
    Apply {
        /// The manifest file, or `-` for standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: String,
    },
    /// Stop every pod and remove everything podnet created on this host;
    /// the daemon exits.
    Reset {
        /// Do not ask for confirmation (it is only asked on a terminal).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

impl Restart {
    fn policy(self) -> &'static str {
        match self {
            Restart::Always => "Always",
            Restart::OnFailure => "OnFailure",
            Restart::Never => "Never",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Affinity {
    #[value(name = "None")]
    None,
    #[value(name = "ClientIP")]
    ClientIp,
}

/// `--label K=V`, repeatable.
#[derive(Debug, Args)]
struct LabelArgs {
    /// A label, KEY=VALUE (repeat for more).
    #[arg(long = "label", short = 'l', value_name = "K=V", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

impl LabelArgs {
    fn into_map(self) -> Labels {
        self.labels.into_iter().collect()
    }
}

/// `--wait` for deletions, as kubectl has it.
#[derive(Debug, Args)]
struct WaitArgs {
    /// Wait until the object is gone (a pod: until its processes have
    /// stopped), as `kubectl delete` does.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    wait: bool,
}

#[derive(Debug, Subcommand)]
enum PodCommand {
    /// Run a command in a new pod: `pod run NAME [--label K=V]... -- CMD [ARG...]`.
    Run {
        /// Pod name (a DNS label).
        name: String,
        #[command(flatten)]
        labels: LabelArgs,
        /// When to restart the process after it exits.
        #[arg(long, value_enum, default_value_t = Restart::Always)]
        restart: Restart,
        /// An environment variable, NAME=VALUE (repeat for more).
        #[arg(long = "env", short = 'e', value_name = "NAME=VALUE", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Make an existing network namespace a pod (as a CNI plugin does): it
    /// gets eth0, an address and a route; its only process is a pause
    /// process; on delete it loses eth0 and keeps existing.
    Attach {
        /// Pod name (a DNS label).
        name: String,
        /// The namespace file, e.g. /var/run/netns/NAME or /proc/PID/ns/net.
        #[arg(long, value_name = "PATH")]
        netns: PathBuf,
        #[command(flatten)]
        labels: LabelArgs,
    },
    /// Run a command inside a pod's network namespace (needs root); exits with its status.
    Exec {
        /// Pod name.
        name: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Print the pod's output (its first container's, or `-c NAME`'s).
    Logs {
        /// Pod name.
        name: String,
        /// The container.
        #[arg(short, long)]
        container: Option<String>,
    },
    /// List pods.
    #[command(visible_alias = "ls")]
    List,
    /// Show one pod.
    Get {
        /// Pod name.
        name: String,
    },
    /// Stop a pod (SIGTERM, SIGKILL after its grace period) and remove it.
    #[command(visible_alias = "rm")]
    Delete {
        /// Pod name.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DeploymentCommand {
    /// Create a deployment: `deployment create NAME --replicas N -- CMD [ARG...]`.
    Create {
        /// Deployment name; pods are NAME-HASH-xxxxx.
        name: String,
        /// Number of pods.
        #[arg(long)]
        replicas: u32,
        /// The pods' labels, which select them (default: app=NAME).
        #[command(flatten)]
        labels: LabelArgs,
        /// The command each pod runs, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Change the number of pods.
    Scale {
        /// Deployment name.
        name: String,
        /// New number of pods.
        #[arg(long)]
        replicas: u32,
    },
    /// List deployments.
    #[command(visible_alias = "ls")]
    List,
    /// Show one deployment.
    Get {
        /// Deployment name.
        name: String,
    },
    /// Delete a deployment and its pods.
    #[command(visible_alias = "rm")]
    Delete {
        /// Deployment name.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Subcommand)]
enum StatefulSetCommand {
    /// Create a statefulset: `statefulset create NAME --replicas N --service SVC -- CMD [ARG...]`.
    Create {
        /// StatefulSet name; pods are NAME-0, NAME-1, ...
        name: String,
        /// Number of pods.
        #[arg(long)]
        replicas: u32,
        /// The service that governs the pods.
        #[arg(long, value_name = "SVC")]
        service: String,
        /// The pods' labels, which select them (default: app=NAME).
        #[command(flatten)]
        labels: LabelArgs,
        /// The command each pod runs, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Change the number of pods (added and removed in ordinal order).
    Scale {
        /// StatefulSet name.
        name: String,
        /// New number of pods.
        #[arg(long)]
        replicas: u32,
    },
    /// List statefulsets.
    #[command(visible_alias = "ls")]
    List,
    /// Show one statefulset.
    Get {
        /// StatefulSet name.
        name: String,
    },
    /// Delete a statefulset and its pods.
    #[command(visible_alias = "rm")]
    Delete {
        /// StatefulSet name.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ServiceCommand {
    /// Create a service with a cluster IP in front of the pods its selector matches.
    Create {
        /// Service name.
        name: String,
        /// Pods with all these labels are the endpoints: K=V[,K=V]...
        #[arg(long, value_name = "K=V[,K=V]", value_parser = parse_selector)]
        selector: Labels,
        /// A port, PORT[:TARGET][/tcp|/udp] (repeat for more).
        #[arg(long = "port", required = true, value_name = "PORT[:TARGET][/PROTO]", value_parser = parse_port_spec)]
        ports: Vec<ServicePort>,
        /// Ask for this cluster IP (inside the service CIDR), or `None` for
        /// a headless service.
        #[arg(long = "cluster-ip", value_name = "IP")]
        cluster_ip: Option<String>,
        /// ClientIP: one client sticks to one endpoint.
        #[arg(long, value_enum, ignore_case = true, default_value_t = Affinity::None)]
        session_affinity: Affinity,
    },
    /// List services.
    #[command(visible_alias = "ls")]
    List,
    /// Show one service.
    Get {
        /// Service name.
        name: String,
    },
    /// Delete a service.
    #[command(visible_alias = "rm")]
    Delete {
        /// Service name.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ListOnly {
    /// List the entries.
    #[command(visible_alias = "ls")]
    List,
}

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// `NAME=VALUE` of `--env`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid --env {s:?}: expected NAME=VALUE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`podnet pod list | head -1`) is not a failure.
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The four kinds the shortcuts know, and where they live in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pod,
    Deployment,
    StatefulSet,
    Service,
}

impl Kind {
    /// The collection path in a namespace.
    fn collection(self, ns: &str) -> String {
        let ns = path_segment(ns);
        match self {
            Kind::Pod => format!("/api/v1/namespaces/{ns}/pods"),
            Kind::Service => format!("/api/v1/namespaces/{ns}/services"),
            Kind::Deployment => format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            Kind::StatefulSet => format!("/apis/apps/v1/namespaces/{ns}/statefulsets"),
        }
    }

    fn object(self, ns: &str, name: &str) -> String {
        format!("{}/{}", self.collection(ns), path_segment(name))
    }

    /// How kubectl names the kind in its messages (`deployment.apps`).
    fn shown(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Service => "service",
            Kind::Deployment => "deployment.apps",
            Kind::StatefulSet => "statefulset.apps",
        }
    }
}

/// The API in one namespace, and how answers are printed.
struct Api {
    client: ApiClient,
    namespace: String,
    output: Output,
}

fn run(cli: Cli) -> Result<ExitCode> {
    let api = Api {
        client: ApiClient::new(&cli.socket),
        namespace: cli.namespace,
        output: cli.output,
    };
    match cli.command {
        Command::Pod(cmd) => pod(&api, cmd),
        Command::Deployment(cmd) => deployment(&api, cmd),
        Command::Statefulset(cmd) => statefulset(&api, cmd),
        Command::Service(cmd) => service(&api, cmd),
        Command::Nat(ListOnly::List) => {
            let rules = api.client.nat_rules()?;
            api.rows(&rules, "NAT rules", nat_table(&rules))
        }
        Command::Conntrack(ListOnly::List) => {
            let flows = api.client.conntrack()?;
            api.rows(&flows, "tracked flows", conntrack_table(&flows))
        }
        Command::Stats => {
            let counters = api.client.stats()?;
            let table = Table {
                headers: vec!["COUNTER".into(), "VALUE".into()],
                rows: counters
                    .iter()
                    .map(|c| vec![c.name.clone(), c.value.to_string()])
                    .collect(),
            };
            api.rows(&counters, "counters", table)
        }
        Command::Reset { force } => reset(&api, force),
        Command::Explain { src, dst, port } => {
            let query = podnet::api::node::FlowQuery::from_args(&src, &dst, &port)?;
            let e = api.client.explain(&query)?;
            if api.output == Output::Json {
                return print_json(&e);
            }
            write_stdout(&explanation_text(&e))
        }
        Command::Apply { file } => apply(&api, &file),
    }
}

impl Api {
    /// Prints a list of `kind`: the server's table, or the list as JSON.
    fn list(&self, kind: Kind) -> Result<ExitCode> {
        let path = kind.collection(&self.namespace);
        if self.output == Output::Json {
            return print_json(&self.client.get::<Value>(&path)?);
        }
        let table = self.client.get_table(&path)?;
        if table["rows"].as_array().is_none_or(|r| r.is_empty()) {
            eprintln!("No resources found in {} namespace.", self.namespace);
            return Ok(ExitCode::SUCCESS);
        }
        write_stdout(&render(&server_table(&table, self.output == Output::Wide)))
    }

    /// Prints one object: a one-row table, or the object as JSON.
    fn get(&self, kind: Kind, name: &str) -> Result<ExitCode> {
        let path = kind.object(&self.namespace, name);
        if self.output == Output::Json {
            return print_json(&self.client.get::<Value>(&path)?);
        }
        let table = self.client.get_table(&path)?;
        write_stdout(&render(&server_table(&table, self.output == Output::Wide)))
    }

    /// Creates `object`; prints `kind/name created` or the created object.
    fn create<T: Serialize>(&self, kind: Kind, name: &str, object: &T) -> Result<ExitCode> {
        let created: Value = self
            .client
            .post(&kind.collection(&self.namespace), Some(object))?;
        self.done(&created, &format!("{}/{name} created", kind.shown()))
    }

    /// Deletes an object (its dependents go too, in the background, as
    /// kubectl's default); waits until it is gone if `wait`.
    fn delete(&self, kind: Kind, name: &str, wait: bool) -> Result<ExitCode> {
        let path = kind.object(&self.namespace, name);
        let deleted: Value = self.client.delete(&path)?;
        if wait {
            // A pod is gone once its processes have stopped: at most its
            // grace period (SIGKILL then), and a margin for a busy node.
            let grace = deleted
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(30);
            let deadline = Instant::now() + Duration::from_secs(grace + 60);
            let uid = deleted.pointer("/metadata/uid").cloned();
            loop {
                match self.client.get::<Value>(&path) {
                    Err(e) if e.status() == Some(404) => break,
                    Err(e) => return Err(e.into()),
                    // Gone, and its name already taken by a new object (a
                    // StatefulSet's pod), as kubectl tells them apart.
                    Ok(now) if uid.is_some() && now.pointer("/metadata/uid") != uid.as_ref() => {
                        break
                    }
                    Ok(_) if Instant::now() >= deadline => {
                        return Err(format!(
                        "{}/{name} is still being deleted after {}s; see `podnet {} get {name}`",
                        kind.shown(),
                        grace + 60,
                        match kind {
                            Kind::Pod => "pod",
                            Kind::Service => "service",
                            Kind::Deployment => "deployment",
                            Kind::StatefulSet => "statefulset",
                        }
                    )
                        .into())
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        self.done(&deleted, &format!("{} \"{name}\" deleted", kind.shown()))
    }

    /// Sets `spec.replicas` through the `scale` subresource.
    fn scale(&self, kind: Kind, name: &str, replicas: u32) -> Result<ExitCode> {
        let path = format!("{}/scale", kind.object(&self.namespace, name));
        let body = serde_json::to_vec(&json!({"spec": {"replicas": replicas}}))?;
        let answer = self.client.request_typed(
            "PATCH",
            &path,
            "application/merge-patch+json",
            Some(&body),
        )?;
        let scale: Value = serde_json::from_slice(&answer)?;
        self.done(&scale, &format!("{}/{name} scaled", kind.shown()))
    }

    /// The result of a change: a line for a person, or the object as JSON.
    fn done(&self, object: &Value, line: &str) -> Result<ExitCode> {
        if self.output == Output::Json {
            return print_json(object);
        }
        write_stdout(&format!("{line}\n"))
    }

    /// Rows of a node view: a table, or the entries as JSON.
    fn rows<T: Serialize>(&self, items: &[T], noun: &str, table: Table) -> Result<ExitCode> {
        if self.output == Output::Json {
            return print_json(&items);
        }
        if items.is_empty() {
            eprintln!("No {noun} found.");
            return Ok(ExitCode::SUCCESS);
        }
        write_stdout(&render(&table))
    }
}

/// `podnet apply -f`: each document as a server-side apply request.
fn apply(api: &Api, file: &str) -> Result<ExitCode> {
    let text = if file == "-" {
        let mut s = String::new();
        io::Read::read_to_string(&mut io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?
    };
    let docs = podnet::api::kube::apply::documents(&text)?;
    for doc in docs {
        let (path, shown) = podnet::api::kube::apply::apply_target(&doc, &api.namespace)?;
        let body = serde_json::to_vec(&doc)?;
        api.client
            .request_typed("PATCH", &path, "application/apply-patch+yaml", Some(&body))?;
        println!("{shown} serverside-applied");
    }
    Ok(ExitCode::SUCCESS)
}

/// The image a command-running container shows: podnet runs commands and
/// never pulls images.
const COMMAND_IMAGE: &str = "podnet/command";

fn container(name: &str, command: Vec<String>, env: Vec<(String, String)>) -> Container {
    Container {
        name: name.to_string(),
        image: Some(COMMAND_IMAGE.to_string()),
        command: Some(command),
        env: (!env.is_empty()).then(|| {
            env.into_iter()
                .map(|(name, value)| k8s_openapi::api::core::v1::EnvVar {
                    name,
                    value: Some(value),
                    value_from: None,
                })
                .collect()
        }),
        ..Default::default()
    }
}

fn meta(name: &str, labels: Labels) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: (!labels.is_empty()).then_some(labels),
        ..Default::default()
    }
}

/// A pod running `command`.
fn pod_object(
    name: &str,
    labels: Labels,
    restart: Restart,
    env: Vec<(String, String)>,
    command: Vec<String>,
) -> Pod {
    Pod {
        metadata: meta(name, labels),
        spec: Some(PodSpec {
            containers: vec![container(name, command, env)],
            restart_policy: Some(restart.policy().into()),
            ..Default::default()
        }),
        status: None,
    }
}

/// A pod in someone else's network namespace, with a pause process.
fn attached_pod_object(name: &str, netns: &Path, labels: Labels) -> Pod {
    let mut pod = pod_object(
        name,
        labels,
        Restart::Always,
        Vec::new(),
        vec!["sleep".into(), "infinity".into()],
    );
    pod.metadata.annotations = Some(BTreeMap::from([(
        ATTACH_NETNS_ANNOTATION.to_string(),
        netns.display().to_string(),
    )]));
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers[0].name = "pause".into();
        spec.termination_grace_period_seconds = Some(0);
    }
    pod
}

/// The pod template of a workload: `labels` (default `app=NAME`) select it.
fn template(name: &str, labels: Labels, command: Vec<String>) -> (LabelSelector, PodTemplateSpec) {
    let labels = if labels.is_empty() {
        Labels::from([("app".to_string(), name.to_string())])
    } else {
        labels
    };
    let selector = LabelSelector {
        match_labels: Some(labels.clone()),
        match_expressions: None,
    };
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(name, command, Vec::new())],
            ..Default::default()
        }),
    };
    (selector, template)
}

fn deployment_object(
    name: &str,
    replicas: u32,
    labels: Labels,
    command: Vec<String>,
) -> Deployment {
    let (selector, template) = template(name, labels, command);
    Deployment {
        metadata: meta(name, Labels::new()),
        spec: DeploymentSpec {
            replicas: Some(replicas as i32),
            selector,
            template,
            ..Default::default()
        },
        status: None,
    }
}

fn statefulset_object(
    name: &str,
    replicas: u32,
    service: &str,
    labels: Labels,
    command: Vec<String>,
) -> StatefulSet {
    let (selector, template) = template(name, labels, command);
    StatefulSet {
        metadata: meta(name, Labels::new()),
        spec: StatefulSetSpec {
            replicas: Some(replicas as i32),
            selector,
            service_name: Some(service.to_string()),
            template,
            ..Default::default()
        },
        status: None,
    }
}

/// A service; with several ports each gets a name, as the API requires
/// (`PORT-TARGET`, and `-udp` for UDP, as `kubectl create service` names them).
fn service_object(
    name: &str,
    selector: Labels,
    mut ports: Vec<ServicePort>,
    cluster_ip: Option<String>,
    affinity: Affinity,
) -> Service {
    if ports.len() > 1 {
        for p in &mut ports {
            let target = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => *t,
                _ => p.port,
            };
            let mut n = format!("{}-{target}", p.port);
            if p.protocol.as_deref() == Some("UDP") {
                n.push_str("-udp");
            }
            p.name = Some(n);
        }
    }
    Service {
        metadata: meta(name, Labels::new()),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(ports),
            cluster_ip,
            session_affinity: Some(
                match affinity {
                    Affinity::None => "None",
                    Affinity::ClientIp => "ClientIP",
                }
                .into(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

fn pod(api: &Api, cmd: PodCommand) -> Result<ExitCode> {
    match cmd {
        PodCommand::Run {
            name,
            labels,
            restart,
            env,
            command,
        } => api.create(
            Kind::Pod,
            &name,
            &pod_object(&name, labels.into_map(), restart, env, command),
        ),
        PodCommand::Attach {
            name,
            netns,
            labels,
        } => {
            if !netns.exists() {
                return Err(format!(
                    "network namespace {} does not exist; create it first (ip netns add NAME)",
                    netns.display()
                )
                .into());
            }
            api.create(
                Kind::Pod,
                &name,
                &attached_pod_object(&name, &netns, labels.into_map()),
            )
        }
        PodCommand::Exec { name, command } => exec(api, &name, &command),
        PodCommand::Logs { name, container } => {
            let mut path = format!("{}/log", Kind::Pod.object(&api.namespace, &name));
            if let Some(c) = container {
                path.push_str(&format!("?container={}", path_segment(&c)));
            }
            let logs = api.client.request_bytes("GET", &path, None)?;
            let mut stdout = io::stdout().lock();
            stdout.write_all(&logs)?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        PodCommand::List => api.list(Kind::Pod),
        PodCommand::Get { name } => api.get(Kind::Pod, &name),
        PodCommand::Delete { name, wait } => api.delete(Kind::Pod, &name, wait.wait),
    }
}

/// Enters the pod's network, mount and UTS namespaces and execs the
/// command there.
fn exec(api: &Api, name: &str, command: &[String]) -> Result<ExitCode> {
    let pod: Pod = api
        .client
        .get(&Kind::Pod.object(&api.namespace, name))
        .map_err(|e| match e.status() {
            Some(404) => format!("pod {name:?} not found in namespace {}", api.namespace),
            _ => e.to_string(),
        })?;
    let status = pod.status.unwrap_or_default();
    let Some(ip) = status.pod_ip else {
        return Err(format!(
            "pod {name} has no network yet (phase {}); try again when it is Running",
            status.phase.as_deref().unwrap_or("Pending")
        )
        .into());
    };
    let path = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ATTACH_NETNS_ANNOTATION))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(podnet::sys::netns::NETNS_RUN_DIR).join(netns_name(&api.namespace, name))
        });
    podnet::sys::nsenter::enter_netns_path(&path)
        .map_err(|e| format!("cannot enter pod {name}'s network namespace: {e}"))?;
    // Its mount and UTS namespaces (volumes, /etc/hosts, host name); an
    // attached pod has none.
    let pod_ns = podnet::sys::mount::pod_ns_dir(&netns_name(&api.namespace, name));
    if pod_ns.exists() {
        podnet::sys::mount::PodNs::open_dir(&pod_ns)
            .and_then(|ns| ns.enter_current_thread())
            .map_err(|e| format!("cannot enter pod {name}'s mount and UTS namespaces: {e}"))?;
    }
    let mut process = std::process::Command::new(&command[0]);
    process
        .args(&command[1..])
        .env("POD_NAME", name)
        .env("POD_NAMESPACE", &api.namespace)
        .env("POD_IP", ip);
    // exec only returns on failure; stdio and the exit status become the command's.
    let e = process.exec();
    eprintln!("error: cannot run {:?} in pod {name}: {e}", command[0]);
    // The shell's conventions: 127 for a missing command, 126 for one that cannot run.
    Ok(ExitCode::from(if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }))
}

fn deployment(api: &Api, cmd: DeploymentCommand) -> Result<ExitCode> {
    let kind = Kind::Deployment;
    match cmd {
        DeploymentCommand::Create {
            name,
            replicas,
            labels,
            command,
        } => api.create(
            kind,
            &name,
            &deployment_object(&name, replicas, labels.into_map(), command),
        ),
        DeploymentCommand::Scale { name, replicas } => api.scale(kind, &name, replicas),
        DeploymentCommand::List => api.list(kind),
        DeploymentCommand::Get { name } => api.get(kind, &name),
        DeploymentCommand::Delete { name, wait } => api.delete(kind, &name, wait.wait),
    }
}

fn statefulset(api: &Api, cmd: StatefulSetCommand) -> Result<ExitCode> {
    let kind = Kind::StatefulSet;
    match cmd {
        StatefulSetCommand::Create {
            name,
            replicas,
            service,
            labels,
            command,
        } => api.create(
            kind,
            &name,
            &statefulset_object(&name, replicas, &service, labels.into_map(), command),
        ),
        StatefulSetCommand::Scale { name, replicas } => api.scale(kind, &name, replicas),
        StatefulSetCommand::List => api.list(kind),
        StatefulSetCommand::Get { name } => api.get(kind, &name),
        StatefulSetCommand::Delete { name, wait } => api.delete(kind, &name, wait.wait),
    }
}

fn service(api: &Api, cmd: ServiceCommand) -> Result<ExitCode> {
    let kind = Kind::Service;
    match cmd {
        ServiceCommand::Create {
            name,
            selector,
            ports,
            cluster_ip,
            session_affinity,
        } => api.create(
            kind,
            &name,
            &service_object(&name, selector, ports, cluster_ip, session_affinity),
        ),
        ServiceCommand::List => api.list(kind),
        ServiceCommand::Get { name } => api.get(kind, &name),
        ServiceCommand::Delete { name, wait } => api.delete(kind, &name, wait.wait),
    }
}

fn reset(api: &Api, force: bool) -> Result<ExitCode> {
    if !force && io::stdin().is_terminal() {
        eprint!(
            "This stops every pod and removes everything podnet created on this host \
             (namespaces, devices, routes, state, credentials). Continue? [y/N] "
        );
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("reset cancelled");
            return Ok(ExitCode::FAILURE);
        }
    }
    let summary = api.client.reset().map_err(|e| match e {
        ClientError::NotRunning { .. } => format!(
            "{e}\n(podnet reset asks the running daemon to remove what it made; start podnetd with the same --state-dir first)"
        )
        .into(),
        e => Box::<dyn Error>::from(e),
    })?;
    for warning in &summary.warnings {
        eprintln!("warning: {warning}");
    }
    if api.output == Output::Json {
        return print_json(&summary);
    }
    write_stdout(&format!(
        "reset: removed {} pods, {} deployments, {} statefulsets, {} services\n",
        summary.pods, summary.deployments, summary.statefulsets, summary.services
    ))
}

fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<ExitCode> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(&text)
}

fn write_stdout(text: &str) -> Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// A table: column headers and rows of cells.
struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// A server `Table` as kubectl prints it: upper-case headers, the columns
/// of priority 0 (all of them if `wide`), `<none>` for empty cells.
fn server_table(table: &Value, wide: bool) -> Table {
    let columns: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .enumerate()
                .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
                .map(|(i, c)| (i, c["name"].as_str().unwrap_or("").to_uppercase()))
                .collect()
        })
        .unwrap_or_default();
    let rows = table["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    columns
                        .iter()
                        .map(|(i, _)| match &r["cells"][*i] {
                            Value::String(s) if s.is_empty() => "<none>".to_string(),
                            Value::String(s) => s.clone(),
                            Value::Null => "<none>".to_string(),
                            v => v.to_string(),
                        })
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    Table {
        headers: columns.into_iter().map(|(_, n)| n).collect(),
        rows,
    }
}

/// Aligns columns like kubectl: left-aligned, three spaces apart, the last
/// column not padded.
fn render(table: &Table) -> String {
    let mut widths: Vec<usize> = table.headers.iter().map(|h| h.chars().count()).collect();
    for row in &table.rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&table.headers).chain(&table.rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count();
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn nat_table(rules: &[NatRule]) -> Table {
    let headers = ["FRONTEND", "SERVICE", "BACKEND", "STATE"]
        .map(String::from)
        .to_vec();
    let mut rows = Vec::new();
    for rule in rules {
        if rule.backends.is_empty() {
            rows.push(vec![
                rule.frontend.clone(),
                rule.service.clone(),
                "<none>".to_string(),
                "reject".to_string(),
            ]);
        }
        for backend in &rule.backends {
            rows.push(vec![
                rule.frontend.clone(),
                rule.service.clone(),
                backend.address.clone(),
                backend.state.clone(),
            ]);
        }
    }
    Table { headers, rows }
}

fn conntrack_table(flows: &[ConntrackEntry]) -> Table {
    let headers = [
        "PROTO",
        "STATE",
        "SRC",
        "DST",
        "REPLY-SRC",
        "REPLY-DST",
        "IDLE",
    ]
    .map(String::from)
    .to_vec();
    let rows = flows
        .iter()
        .map(|f| {
            vec![
                f.protocol.clone(),
                f.state.clone(),
                f.original.src.clone(),
                f.original.dst.clone(),
                f.reply.src.clone(),
                f.reply.dst.clone(),
                format!("{}s", f.idle_seconds),
            ]
        })
        .collect();
    Table { headers, rows }
}

/// `podnet explain`'s answer as lines of `what: value`.
fn explanation_text(e: &podnet::api::node::Explanation) -> String {
    let mut out = format!("flow:     {}\nfrom:     {}\n", e.flow, e.from);
    if let Some(s) = &e.service {
        out += &format!("service:  {s}\n");
    }
    if let Some(b) = &e.backend {
        out += &format!("backend:  {b}\n");
    }
    for n in &e.nat {
        out += &format!("nat:      {n}\n");
    }
    for (dir, step) in [("egress", &e.egress), ("ingress", &e.ingress)] {
        if let Some(step) = step {
            let pod = step
                .pod
                .as_deref()
                .map(|p| format!(" of {p}"))
                .unwrap_or_default();
            out += &format!("{dir:<8}  policy{pod}: {}\n", step.reason);
        }
    }
    out += &format!("verdict:  {}\n", e.verdict);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn columns_align() {
        let t = Table {
            headers: vec!["NAME".into(), "IP".into()],
            rows: vec![vec!["a-long-name".into(), "10.0.0.1".into()]],
        };
        assert_eq!(render(&t), "NAME          IP\na-long-name   10.0.0.1\n");
    }

    #[test]
    fn server_tables_show_kubectl_columns() {
        let t = json!({
            "columnDefinitions": [
                {"name": "Name", "priority": 0},
                {"name": "Ready", "priority": 0},
                {"name": "IP", "priority": 1},
            ],
            "rows": [{"cells": ["web-1", "1/1", "10.244.0.5"]}, {"cells": ["web-2", "0/1", null]}],
        });
        let narrow = server_table(&t, false);
        assert_eq!(narrow.headers, ["NAME", "READY"]);
        assert_eq!(narrow.rows[1], ["web-2", "0/1"]);
        let wide = server_table(&t, true);
        assert_eq!(wide.headers, ["NAME", "READY", "IP"]);
        assert_eq!(wide.rows[1][2], "<none>");
    }

    #[test]
    fn shortcuts_build_the_objects_kubectl_would() {
        let d = deployment_object("web", 3, Labels::new(), vec!["sleep".into(), "1".into()]);
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.selector.match_labels.unwrap()["app"],
            "web",
            "app=NAME by default"
        );
        let c = &spec.template.spec.unwrap().containers[0];
        assert_eq!(c.command.as_deref().unwrap(), ["sleep", "1"]);
        assert_eq!(c.image.as_deref(), Some(COMMAND_IMAGE));

        let ports = vec![
            parse_port_spec("80:8080").unwrap(),
            parse_port_spec("53/udp").unwrap(),
        ];
        let s = service_object("svc", Labels::new(), ports, None, Affinity::ClientIp);
        let spec = s.spec.unwrap();
        let names: Vec<_> = spec.ports.unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, [Some("80-8080".into()), Some("53-53-udp".into())]);
        assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));

        let p = attached_pod_object("a", Path::new("/var/run/netns/x"), Labels::new());
        assert_eq!(
            p.metadata.annotations.unwrap()[ATTACH_NETNS_ANNOTATION],
            "/var/run/netns/x"
        );
    }
}
