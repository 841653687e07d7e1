//! `podnet`: the kubectl-shaped CLI of podnetd.
//!
//! Thin by design: parse the command line, call the API through
//! [`podnet::api::ApiClient`], print a table (default), a wider table
//! (`-o wide`) or pretty JSON (`-o json`). Failures print `error: ...` on
//! stderr and exit 1 (usage errors exit 2, from clap); `pod exec` exits with
//! the command's own status.

use std::error::Error;
use std::io::{self, BufRead, IsTerminal, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use podnet::api::{
    parse_label, parse_port_spec, parse_selector, ApiClient, ConntrackEntry, Deployment,
    DeploymentSpec, Labels, NatRule, Pod, PodSpec, RestartPolicy, Service, ServicePort,
    ServiceSpec, SessionAffinity, StatefulSet, StatefulSetSpec, DEFAULT_SOCKET,
};

/// Kubernetes-style pods, services and NAT on one Linux host, without Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "podnet", version, propagate_version = true)]
struct Cli {
    /// The podnetd API socket.
    #[arg(long, global = true, env = "PODNET_SOCKET", default_value = DEFAULT_SOCKET, value_name = "PATH")]
    socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned columns.
    Table,
    /// Aligned columns, with more of them.
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
    /// Apply a manifest (multi-document YAML, as `kubectl apply -f`) to a
    /// daemon running the Kubernetes API (`podnetd --kube-api`).
    Apply {
        /// The manifest file, or `-` for standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: String,
        /// The namespace of documents that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Stop every pod and remove everything podnet created on this host.
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

impl From<Restart> for RestartPolicy {
    fn from(r: Restart) -> Self {
        match r {
            Restart::Always => RestartPolicy::Always,
            Restart::OnFailure => RestartPolicy::OnFailure,
            Restart::Never => RestartPolicy::Never,
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
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Make an existing network namespace a pod (as a CNI plugin does).
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
    /// Print the pod process's stdout and stderr.
    Logs {
        /// Pod name.
        name: String,
    },
    /// List pods.
    #[command(visible_alias = "ls")]
    List,
    /// Show one pod.
    Get {
        /// Pod name.
        name: String,
    },
    /// Stop a pod and remove it.
    #[command(visible_alias = "rm")]
    Delete {
        /// Pod name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeploymentCommand {
    /// Create a deployment: `deployment create NAME --replicas N -- CMD [ARG...]`.
    Create {
        /// Deployment name; pods are NAME-xxxxx.
        name: String,
        /// Number of pods.
        #[arg(long)]
        replicas: u32,
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
        /// Ask for this cluster IP (inside the service CIDR).
        #[arg(long = "cluster-ip", value_name = "IP")]
        cluster_ip: Option<std::net::IpAddr>,
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
    },
}

#[derive(Debug, Subcommand)]
enum ListOnly {
    /// List the entries.
    #[command(visible_alias = "ls")]
    List,
}

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

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

fn run(cli: Cli) -> Result<ExitCode> {
    let client = ApiClient::new(&cli.socket);
    let out = Printer { format: cli.output };
    match cli.command {
        Command::Pod(cmd) => pod(&client, &out, cmd),
        Command::Deployment(cmd) => deployment(&client, &out, cmd),
        Command::Statefulset(cmd) => statefulset(&client, &out, cmd),
        Command::Service(cmd) => service(&client, &out, cmd),
        Command::Nat(ListOnly::List) => {
            let rules = client.nat_rules()?;
            out.list(&rules, "NAT rules", nat_table)
        }
        Command::Conntrack(ListOnly::List) => {
            let flows = client.conntrack()?;
            out.list(&flows, "tracked flows", conntrack_table)
        }
        Command::Reset { force } => reset(&client, &out, force),
        Command::Apply { file, namespace } => apply(&client, &file, &namespace),
    }
}

/// `podnet apply -f`: each document as a server-side apply request.
fn apply(client: &ApiClient, file: &str, namespace: &str) -> Result<ExitCode> {
    let text = if file == "-" {
        let mut s = String::new();
        io::Read::read_to_string(&mut io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?
    };
    let docs = podnet::api::kube::apply::documents(&text)?;
    for doc in docs {
        let (path, shown) = podnet::api::kube::apply::apply_target(&doc, namespace)?;
        let body = serde_json::to_vec(&doc)?;
        client.request_typed("PATCH", &path, "application/apply-patch+yaml", Some(&body))?;
        println!("{shown} serverside-applied");
    }
    Ok(ExitCode::SUCCESS)
}

fn pod(client: &ApiClient, out: &Printer, cmd: PodCommand) -> Result<ExitCode> {
    match cmd {
        PodCommand::Run {
            name,
            labels,
            restart,
            command,
        } => {
            let spec = PodSpec {
                name,
                labels: labels.into_map(),
                restart_policy: restart.into(),
                command,
                netns: None,
            };
            let pod = client.create_pod(&spec)?;
            out.done(&pod, &format!("pod/{} created", pod.name))
        }
        PodCommand::Attach {
            name,
            netns,
            labels,
        } => {
            // The daemon resolves the path in its own mount namespace, so send an absolute one.
            let netns = std::path::absolute(&netns).unwrap_or(netns);
            let spec = PodSpec {
                name,
                labels: labels.into_map(),
                restart_policy: RestartPolicy::default(),
                command: Vec::new(),
                netns: Some(netns.to_string_lossy().into_owned()),
            };
            let pod = client.create_pod(&spec)?;
            out.done(&pod, &format!("pod/{} attached", pod.name))
        }
        PodCommand::Exec { name, command } => exec(client, &name, &command),
        PodCommand::Logs { name } => {
            let logs = client.pod_logs(&name)?;
            let mut stdout = io::stdout().lock();
            stdout.write_all(&logs)?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        PodCommand::List => out.list(&client.list_pods()?, "pods", pod_table),
        PodCommand::Get { name } => out.one(&client.get_pod(&name)?, pod_table),
        PodCommand::Delete { name } => {
            let pod = client.delete_pod(&name)?;
            out.done(&pod, &format!("pod \"{}\" deleted", pod.name))
        }
    }
}

/// Enters the pod's network namespace and replaces this process with `command`.
fn exec(client: &ApiClient, name: &str, command: &[String]) -> Result<ExitCode> {
    let pod = client.get_pod(name)?;
    if pod.netns.is_empty() {
        return Err(format!(
            "pod {name} has no network namespace yet (phase {})",
            pod.phase
        )
        .into());
    }
    podnet::sys::nsenter::enter_netns_path(Path::new(&pod.netns))
        .map_err(|e| format!("cannot enter pod {name}'s network namespace: {e}"))?;
    let mut process = std::process::Command::new(&command[0]);
    process.args(&command[1..]).env("POD_NAME", &pod.name);
    if let Some(ip) = &pod.ip {
        process.env("POD_IP", ip);
    }
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

fn deployment(client: &ApiClient, out: &Printer, cmd: DeploymentCommand) -> Result<ExitCode> {
    match cmd {
        DeploymentCommand::Create {
            name,
            replicas,
            labels,
            command,
        } => {
            let spec = DeploymentSpec {
                name,
                replicas,
                labels: labels.into_map(),
                command,
            };
            let d = client.create_deployment(&spec)?;
            out.done(&d, &format!("deployment/{} created", d.name))
        }
        DeploymentCommand::Scale { name, replicas } => {
            let d = client.scale_deployment(&name, replicas)?;
            out.done(&d, &format!("deployment/{} scaled", d.name))
        }
        DeploymentCommand::List => {
            out.list(&client.list_deployments()?, "deployments", deployment_table)
        }
        DeploymentCommand::Get { name } => {
            out.one(&client.get_deployment(&name)?, deployment_table)
        }
        DeploymentCommand::Delete { name } => {
            let d = client.delete_deployment(&name)?;
            out.done(&d, &format!("deployment \"{}\" deleted", d.name))
        }
    }
}

fn statefulset(client: &ApiClient, out: &Printer, cmd: StatefulSetCommand) -> Result<ExitCode> {
    match cmd {
        StatefulSetCommand::Create {
            name,
            replicas,
            service,
            labels,
            command,
        } => {
            let spec = StatefulSetSpec {
                name,
                replicas,
                service,
                labels: labels.into_map(),
                command,
            };
            let s = client.create_statefulset(&spec)?;
            out.done(&s, &format!("statefulset/{} created", s.name))
        }
        StatefulSetCommand::Scale { name, replicas } => {
            let s = client.scale_statefulset(&name, replicas)?;
            out.done(&s, &format!("statefulset/{} scaled", s.name))
        }
        StatefulSetCommand::List => out.list(
            &client.list_statefulsets()?,
            "statefulsets",
            statefulset_table,
        ),
        StatefulSetCommand::Get { name } => {
            out.one(&client.get_statefulset(&name)?, statefulset_table)
        }
        StatefulSetCommand::Delete { name } => {
            let s = client.delete_statefulset(&name)?;
            out.done(&s, &format!("statefulset \"{}\" deleted", s.name))
        }
    }
}

fn service(client: &ApiClient, out: &Printer, cmd: ServiceCommand) -> Result<ExitCode> {
    match cmd {
        ServiceCommand::Create {
            name,
            selector,
            ports,
            cluster_ip,
            session_affinity,
        } => {
            let spec = ServiceSpec {
                name,
                selector,
                ports,
                cluster_ip: cluster_ip.map(|ip| ip.to_string()),
                session_affinity: match session_affinity {
                    Affinity::None => SessionAffinity::None,
                    Affinity::ClientIp => SessionAffinity::ClientIP,
                },
            };
            let s = client.create_service(&spec)?;
            out.done(&s, &format!("service/{} created", s.name))
        }
        ServiceCommand::List => out.list(&client.list_services()?, "services", service_table),
        ServiceCommand::Get { name } => out.one(&client.get_service(&name)?, service_table),
        ServiceCommand::Delete { name } => {
            let s = client.delete_service(&name)?;
            out.done(&s, &format!("service \"{}\" deleted", s.name))
        }
    }
}

fn reset(client: &ApiClient, out: &Printer, force: bool) -> Result<ExitCode> {
    if !force && io::stdin().is_terminal() {
        eprint!(
            "This stops every pod and removes everything podnet created on this host \
             (namespaces, devices, routes, state). Continue? [y/N] "
        );
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            eprintln!("reset cancelled");
            return Ok(ExitCode::FAILURE);
        }
    }
    let summary = client.reset()?;
    for warning in &summary.warnings {
        eprintln!("warning: {warning}");
    }
    out.done(
        &summary,
        &format!(
            "reset: removed {} pods, {} deployments, {} statefulsets, {} services",
            summary.pods, summary.deployments, summary.statefulsets, summary.services
        ),
    )
}

/// Prints answers in the chosen format.
struct Printer {
    format: Output,
}

/// A table: column headers and rows of cells.
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Printer {
    fn wide(&self) -> bool {
        self.format == Output::Wide
    }

    fn json<T: Serialize + ?Sized>(&self, value: &T) -> Result<ExitCode> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        write_stdout(&text)
    }

    /// A list: a table (or a note on stderr when empty), or a JSON array.
    fn list<T: Serialize>(
        &self,
        items: &[T],
        noun: &str,
        table: fn(&[T], bool) -> Table,
    ) -> Result<ExitCode> {
        if self.format == Output::Json {
            return self.json(items);
        }
        if items.is_empty() {
            eprintln!("No {noun} found.");
            return Ok(ExitCode::SUCCESS);
        }
        write_stdout(&render(&table(items, self.wide())))
    }

    /// One object: a one-row table, or a JSON object.
    fn one<T: Serialize>(&self, item: &T, table: fn(&[T], bool) -> Table) -> Result<ExitCode> {
        if self.format == Output::Json {
            return self.json(item);
        }
        write_stdout(&render(&table(std::slice::from_ref(item), self.wide())))
    }

    /// The result of a change: a line for a person, or the object as JSON.
    fn done<T: Serialize>(&self, item: &T, line: &str) -> Result<ExitCode> {
        if self.format == Output::Json {
            return self.json(item);
        }
        write_stdout(&format!("{line}\n"))
    }
}

fn write_stdout(text: &str) -> Result<ExitCode> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Aligns columns like kubectl: left-aligned, three spaces apart, the last
/// column not padded.
fn render(table: &Table) -> String {
    let mut widths: Vec<usize> = table.headers.iter().map(|h| h.len()).collect();
    for row in &table.rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = table.headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&headers).chain(&table.rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn or_none(s: Option<&str>) -> String {
    s.map_or_else(|| "<none>".to_string(), str::to_string)
}

fn labels_cell(labels: &Labels) -> String {
    if labels.is_empty() {
        return "<none>".to_string();
    }
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

fn list_cell(items: &[String], wide: bool) -> String {
    const SHOWN: usize = 3;
    match items.len() {
        0 => "<none>".to_string(),
        n if wide || n <= SHOWN => items.join(","),
        n => format!("{} + {} more...", items[..SHOWN].join(","), n - SHOWN),
    }
}

fn command_cell(command: &[String]) -> String {
    if command.is_empty() {
        "<none>".to_string()
    } else {
        command.join(" ")
    }
}

/// kubectl's age: `45s`, `3m12s`, `17m`, `5h3m`, `20h`, `3d4h`, `12d`.
fn age(created: Option<u64>) -> String {
    let Some(created) = created else {
        return "<unknown>".to_string();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(created);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        0..120 => format!("{s}s"),
        120..600 if s % 60 != 0 => format!("{m}m{}s", s % 60),
        120..10_800 => format!("{m}m"),
        10_800..28_800 if m % 60 != 0 => format!("{h}h{}m", m % 60),
        10_800..172_800 => format!("{h}h"),
        172_800..691_200 if h % 24 != 0 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn pod_table(pods: &[Pod], wide: bool) -> Table {
    let mut headers = vec!["NAME", "STATUS", "IP", "RESTARTS", "AGE"];
    if wide {
        headers.extend(["IPV6", "PID", "OWNER", "LABELS", "MESSAGE", "COMMAND"]);
    }
    let rows = pods
        .iter()
        .map(|p| {
            let mut row = vec![
                p.name.clone(),
                p.phase.to_string(),
                or_none(p.ip.as_deref()),
                p.restarts.to_string(),
                age(p.created),
            ];
            if wide {
                row.extend([
                    or_none(p.ipv6.as_deref()),
                    p.pid
                        .map_or_else(|| "<none>".to_string(), |p| p.to_string()),
                    or_none(p.owner.as_deref()),
                    labels_cell(&p.labels),
                    or_none(p.message.as_deref()),
                    command_cell(&p.command),
                ]);
            }
            row
        })
        .collect();
    Table { headers, rows }
}

fn deployment_table(items: &[Deployment], wide: bool) -> Table {
    let mut headers = vec!["NAME", "READY", "AGE"];
    if wide {
        headers.extend(["LABELS", "PODS", "COMMAND"]);
    }
    let rows = items
        .iter()
        .map(|d| {
            let mut row = vec![
                d.name.clone(),
                format!("{}/{}", d.ready, d.replicas),
                age(d.created),
            ];
            if wide {
                row.extend([
                    labels_cell(&d.labels),
                    list_cell(&d.pods, true),
                    command_cell(&d.command),
                ]);
            }
            row
        })
        .collect();
    Table { headers, rows }
}

fn statefulset_table(items: &[StatefulSet], wide: bool) -> Table {
    let mut headers = vec!["NAME", "READY", "SERVICE", "AGE"];
    if wide {
        headers.extend(["LABELS", "PODS", "COMMAND"]);
    }
    let rows = items
        .iter()
        .map(|s| {
            let mut row = vec![
                s.name.clone(),
                format!("{}/{}", s.ready, s.replicas),
                s.service.clone(),
                age(s.created),
            ];
            if wide {
                row.extend([
                    labels_cell(&s.labels),
                    list_cell(&s.pods, true),
                    command_cell(&s.command),
                ]);
            }
            row
        })
        .collect();
    Table { headers, rows }
}

fn service_table(items: &[Service], wide: bool) -> Table {
    let mut headers = vec!["NAME", "CLUSTER-IP", "PORT(S)", "ENDPOINTS", "AGE"];
    if wide {
        headers.extend(["SELECTOR", "AFFINITY"]);
    }
    let rows = items
        .iter()
        .map(|s| {
            let ports: Vec<String> = s.ports.iter().map(ToString::to_string).collect();
            let mut row = vec![
                s.name.clone(),
                s.cluster_ip.clone(),
                ports.join(","),
                list_cell(&s.endpoints, wide),
                age(s.created),
            ];
            if wide {
                row.extend([labels_cell(&s.selector), s.session_affinity.to_string()]);
            }
            row
        })
        .collect();
    Table { headers, rows }
}

/// One row per backend, like `iptables -t nat -L` lists one DNAT target per rule.
fn nat_table(rules: &[NatRule], _wide: bool) -> Table {
    let headers = vec!["FRONTEND", "SERVICE", "BACKEND", "STATE"];
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

fn conntrack_table(flows: &[ConntrackEntry], _wide: bool) -> Table {
    let headers = vec![
        "PROTO",
        "STATE",
        "SRC",
        "DST",
        "REPLY-SRC",
        "REPLY-DST",
        "IDLE",
    ];
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
            headers: vec!["NAME", "IP"],
            rows: vec![vec!["a-long-name".into(), "10.0.0.1".into()]],
        };
        assert_eq!(render(&t), "NAME          IP\na-long-name   10.0.0.1\n");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(age(None), "<unknown>");
        assert_eq!(age(Some(now - 5)), "5s");
        assert_eq!(age(Some(now - 200)), "3m20s");
        assert_eq!(age(Some(now - 1800)), "30m");
        assert_eq!(age(Some(now - 4 * 3600 - 120)), "4h2m");
        assert_eq!(age(Some(now - 30 * 3600)), "30h");
        assert_eq!(age(Some(now - 3 * 86400 - 3600)), "3d1h");
        assert_eq!(age(Some(now - 30 * 86400)), "30d");
        // A clock behind the daemon's must not underflow.
        assert_eq!(age(Some(now + 100)), "0s");
    }
}
