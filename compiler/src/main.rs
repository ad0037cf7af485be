//! The `aigw` command line: a thin layer over the `aigw` library.
//!
//! Manifests go to standard output (or a folder); diagnostics and logs go to standard error
//! only, so `aigw build . | kubectl apply -f -` and Argo CD plugins see nothing but YAML.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aigw::diag::Diagnostic;
use aigw::{BuildOptions, BuildOutput, Target, load, plan, write};
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

// The compiler allocates many small JSON nodes; mimalloc is markedly faster and leaner at that
// than the system allocator (see the benchmark table in README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "aigw",
    version,
    about = "Compile Envoy AI Gateway custom resources into Gateway API, Envoy Gateway and Kubernetes manifests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile the custom resources into manifests (or, with `--target envoy`, a standalone
    /// Envoy setup).
    Build {
        #[command(flatten)]
        inputs: Inputs,
        /// `-` for standard output, or a folder (one file per object plus kustomization.yaml).
        /// Required for `--target envoy`.
        #[arg(short, long, default_value = "-")]
        output: PathBuf,
        /// What to compile for: Kubernetes with Envoy Gateway, or one local Envoy plus the
        /// extprocs (envoy.yaml, filter configs and the Secrets they read).
        #[arg(long, value_enum, default_value_t = TargetArg::Kubernetes)]
        target: TargetArg,
        /// Port of the standalone Envoy's admin interface, on 127.0.0.1 (`--target envoy`).
        #[arg(long, default_value_t = aigw::emit::envoy::DEFAULT_ADMIN_PORT)]
        envoy_admin_port: u16,
        #[command(flatten)]
        settings: Settings,
    },
    /// Compile for a standalone Envoy and run it with one extproc per Gateway until Ctrl-C.
    Run {
        #[command(flatten)]
        inputs: Inputs,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Build in memory and compare with a rendered folder; exit 1 when they differ.
    Diff {
        #[command(flatten)]
        inputs: Inputs,
        /// The rendered folder to compare with.
        #[arg(long)]
        against: PathBuf,
        #[command(flatten)]
        settings: Settings,
    },
    /// Check each object alone, as `kubectl apply` would; exit 1 when any is invalid.
    Validate {
        #[command(flatten)]
        inputs: Inputs,
        /// Namespace of namespaced objects that name none.
        #[arg(long, default_value = "default", value_parser = parse_namespace)]
        namespace: String,
    },
    /// Write the JSON Schemas of the input kinds and of the filter config.
    Schema {
        /// Output folder.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetArg {
    /// Gateway API, Envoy Gateway and Kubernetes manifests.
    Kubernetes,
    /// A standalone Envoy bootstrap plus the extproc files, for `aigw run` or by hand.
    Envoy,
}

#[derive(Args)]
struct Inputs {
    /// Files, folders (searched recursively for *.yaml and *.yml) or `-` for standard input.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Args)]
struct Settings {
    /// Namespace of namespaced objects that name none (an Argo CD plugin gets the
    /// application's destination namespace through ARGOCD_APP_NAMESPACE).
    #[arg(long, env = "ARGOCD_APP_NAMESPACE", default_value = "default", value_parser = parse_namespace)]
    namespace: String,
    /// Extproc image, when GatewayConfig sets none.
    #[arg(long, env = "AIGW_EXTPROC_IMAGE", default_value = plan::DEFAULT_EXTPROC_IMAGE)]
    extproc_image: String,
    /// Replicas of each extproc Deployment (a PodDisruptionBudget is added from 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..))]
    replicas: i32,
    /// Requests with a larger body are answered 413 by the extproc.
    #[arg(long, default_value_t = aigw_filterconfig::DEFAULT_MAX_REQUEST_BODY_BYTES)]
    max_request_body_bytes: u64,
    /// Write input Secrets, with their data, to the output (keep such output out of Git).
    #[arg(long)]
    include_secrets: bool,
    /// Time a client has to send a whole request to a Gateway with AI routes (`90s`, `5m`);
    /// slower ones get 408.
    #[arg(long, default_value = "120s", value_parser = parse_timeout)]
    request_receive_timeout: u32,
    /// Emit no EnvoyPatchPolicy, for an Envoy Gateway without
    /// `extensionApis.enableEnvoyPatchPolicy`; Envoy's own error replies to AI requests then
    /// stay plain text.
    #[arg(long)]
    no_envoy_patch_policy: bool,
}

/// A timeout in whole seconds, minutes or hours (`90s`, `5m`, `1h`), as seconds.
fn parse_timeout(text: &str) -> Result<u32, String> {
    let (number, unit) = text.split_at(text.trim_end_matches(['s', 'm', 'h']).len());
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err("give a number with a unit: s, m or h (e.g. 90s)".to_string()),
    };
    let seconds = number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|s| (1..=86_400).contains(s))
        .ok_or_else(|| "give between 1s and 24h (e.g. 90s)".to_string())?;
    Ok(seconds)
}

fn parse_namespace(text: &str) -> Result<String, String> {
    aigw::validate::names::check(aigw::validate::names::NameRule::Label, text)?;
    Ok(text.to_string())
}

impl Settings {
    fn options(&self) -> BuildOptions {
        BuildOptions {
            default_namespace: self.namespace.clone(),
            extproc_image: self.extproc_image.clone(),
            replicas: self.replicas,
            max_request_body_bytes: self.max_request_body_bytes,
            include_secrets: self.include_secrets,
            request_receive_timeout_secs: self.request_receive_timeout,
            envoy_patch_policies: !self.no_envoy_patch_policy,
            ..BuildOptions::default()
        }
    }
}

fn report(diagnostics: &[Diagnostic]) {
    let mut stderr = std::io::stderr().lock();
    for diagnostic in diagnostics {
        let _ = writeln!(stderr, "{diagnostic}");
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        let _ = writeln!(
            stderr,
            "aigw: {errors} error{} found; nothing was written",
            if errors == 1 { "" } else { "s" }
        );
    }
}

/// Builds, reporting diagnostics (those of reading the input first); `None` when there were
/// errors.
fn build(read: &Read, options: &BuildOptions) -> Option<BuildOutput> {
    let read_failed = read.diagnostics.iter().any(Diagnostic::is_error);
    match aigw::build(&read.sources, options) {
        Ok(built) => {
            report(&read.with(&built.warnings));
            (!read_failed).then_some(built)
        }
        Err(diagnostics) => {
            report(&read.with(&diagnostics));
            None
        }
    }
}

/// Says, once per build, what the generated EnvoyPatchPolicies need from Envoy Gateway.
fn note_patch_policies(built: &BuildOutput) {
    let upstream = built.objects.iter().any(|o| {
        o.kind == "EnvoyPatchPolicy"
            && (o.text.contains(aigw::emit::attempts::UPSTREAM_FILTER)
                || o.text.contains("allow_all_routing"))
    });
    if upstream {
        eprintln!(
            "aigw: note: the EnvoyPatchPolicies *{} let the extproc name each rule's virtual host and put it on each attempt where a rule falls back or balances between backends; Envoy Gateway applies them only with `extensionApis.enableEnvoyPatchPolicy: true` in its configuration, and without them AI requests find no route (404) or reach providers untranslated: enable it, or build with --no-envoy-patch-policy (no fallback between backends, and Envoy tries every rule of the Gateway in turn)",
            aigw::emit::attempts::POLICY_SUFFIX
        );
    }
}

/// Writes a standalone build into `dir`; returns it.
fn write_standalone(
    built: BuildOutput,
    dir: &std::path::Path,
) -> anyhow::Result<aigw::emit::envoy::Standalone> {
    let standalone = built
        .standalone
        .context("internal error: the envoy target produced no folder")?;
    let files = write::tree_files(standalone.files.clone())?;
    write::write_tree(dir, &files)?;
    Ok(standalone)
}

/// Builds, printing warnings; `None` (after printing the errors) when the build failed.
fn build_or_report(inputs: &Inputs, settings: &Settings) -> Option<aigw::BuildOutput> {
    build(&sources(inputs), &settings.options())
}

/// The input as read, with what could not be read.
struct Read {
    sources: Vec<load::Source>,
    diagnostics: Vec<Diagnostic>,
}

impl Read {
    /// The reading diagnostics followed by `more`, in the usual order.
    fn with(&self, more: &[Diagnostic]) -> Vec<Diagnostic> {
        let mut all = self.diagnostics.clone();
        all.extend_from_slice(more);
        aigw::diag::normalize(&mut all);
        all
    }
}

fn sources(inputs: &Inputs) -> Read {
    let (sources, diagnostics) = load::read_sources(&inputs.paths);
    Read {
        sources,
        diagnostics,
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build {
            inputs,
            output,
            target: TargetArg::Envoy,
            envoy_admin_port,
            settings,
        } => build_envoy(&inputs, &output, envoy_admin_port, settings),
        Command::Run { inputs, options } => run_standalone(&inputs, options),
        Command::Build {
            inputs,
            output,
            target: TargetArg::Kubernetes,
            envoy_admin_port: _,
            settings,
        } => build_kubernetes(&inputs, &output, &settings),
        Command::Diff {
            inputs,
            against,
            settings,
        } => diff(&inputs, &against, &settings),
        Command::Validate { inputs, namespace } => validate(&inputs, &namespace),
        Command::Schema { output } => write_schemas(&output),
    }
}

/// `aigw build --target envoy`: a standalone Envoy setup in the folder `output`.
fn build_envoy(
    inputs: &Inputs,
    output: &Path,
    envoy_admin_port: u16,
    settings: Settings,
) -> anyhow::Result<ExitCode> {
    if output.as_os_str() == "-" {
        anyhow::bail!(
            "--target envoy writes a folder (envoy.yaml, filter configs, Secrets): pass -o DIR"
        );
    }
    let sources = sources(inputs);
    let options = BuildOptions {
        target: Target::Envoy,
        envoy_admin_port,
        ..settings.options()
    };
    let Some(built) = build(&sources, &options) else {
        return Ok(ExitCode::FAILURE);
    };
    let standalone = write_standalone(built, output)?;
    eprintln!(
        "aigw: wrote a standalone Envoy setup for {} Gateway{} to {}; run `envoy -c envoy.yaml` there with an aigw-extproc per Gateway, or use `aigw run`",
        standalone.gateways.len(),
        if standalone.gateways.len() == 1 {
            ""
        } else {
            "s"
        },
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}

// What `aigw run` takes besides its inputs.
#[derive(Args)]
struct RunOptions {
    /// Folder to write the setup to (default: a fresh folder under $XDG_RUNTIME_DIR or the
    /// temporary folder, removed on exit).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Envoy binary (default: $ENVOY_BIN, else `envoy` on PATH).
    #[arg(long)]
    envoy_bin: Option<PathBuf>,
    /// Extproc binary (default: $AIGW_EXTPROC_BIN, else `aigw-extproc` next to aigw, else on
    /// PATH).
    #[arg(long)]
    extproc_bin: Option<PathBuf>,
    /// Port of Envoy's admin interface, on 127.0.0.1.
    #[arg(long, default_value_t = aigw::emit::envoy::DEFAULT_ADMIN_PORT)]
    envoy_admin_port: u16,
    /// Namespace of namespaced objects that name none.
    #[arg(long, default_value = "default", value_parser = parse_namespace)]
    namespace: String,
    /// Requests with a larger body are answered 413 by the extproc.
    #[arg(long, default_value_t = aigw_filterconfig::DEFAULT_MAX_REQUEST_BODY_BYTES)]
    max_request_body_bytes: u64,
    /// Time a client has to send a whole request (`90s`, `5m`); slower ones get 408.
    #[arg(long, default_value = "120s", value_parser = parse_timeout)]
    request_receive_timeout: u32,
}

/// `aigw run`: builds the standalone setup and runs Envoy and the extprocs on it.
fn run_standalone(inputs: &Inputs, options: RunOptions) -> anyhow::Result<ExitCode> {
    let RunOptions {
        dir,
        envoy_bin,
        extproc_bin,
        envoy_admin_port,
        namespace,
        max_request_body_bytes,
        request_receive_timeout,
    } = options;
    let sources = sources(inputs);
    let options = BuildOptions {
        target: Target::Envoy,
        envoy_admin_port,
        default_namespace: namespace,
        max_request_body_bytes,
        request_receive_timeout_secs: request_receive_timeout,
        ..BuildOptions::default()
    };
    let Some(built) = build(&sources, &options) else {
        return Ok(ExitCode::FAILURE);
    };
    if built
        .standalone
        .as_ref()
        .is_none_or(|s| s.listeners.is_empty())
    {
        anyhow::bail!(
            "nothing to run: no AIGatewayRoute is attached to an HTTP listener of a Gateway in the input"
        );
    }
    let envoy = aigw::run::find_envoy(envoy_bin.as_deref()).map_err(anyhow::Error::msg)?;
    let extproc = aigw::run::find_extproc(extproc_bin.as_deref()).map_err(anyhow::Error::msg)?;
    let temporary = dir.is_none();
    let dir = dir.unwrap_or_else(aigw::run::default_dir);
    let standalone = write_standalone(built, &dir)?;
    let code = aigw::run::supervise(&standalone, &dir, &envoy, &extproc);
    if temporary {
        // It holds copies of the Secrets.
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::from(code?))
}

/// `aigw build` (Kubernetes): the manifests to standard output (`-`) or to the folder `output`.
fn build_kubernetes(
    inputs: &Inputs,
    output: &Path,
    settings: &Settings,
) -> anyhow::Result<ExitCode> {
    let Some(built) = build_or_report(inputs, settings) else {
        return Ok(ExitCode::FAILURE);
    };
    note_patch_policies(&built);
    if output.as_os_str() == "-" {
        // Object by object, as `BuildOutput::stream` joins them, without a second copy
        // of the whole output in memory.
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        for object in &built.objects {
            stdout
                .write_all(b"---\n")
                .and_then(|()| stdout.write_all(object.text.as_bytes()))
                .context("writing to standard output")?;
        }
        stdout.flush().context("writing to standard output")?;
    } else {
        let files = write::files(&built.objects)?;
        write::write_dir(output, &files)?;
        eprintln!(
            "aigw: wrote {} objects to {}",
            built.objects.len(),
            output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `aigw diff`: 0 when `against` holds the build, 1 when it differs, 2 when the build fails.
fn diff(inputs: &Inputs, against: &Path, settings: &Settings) -> anyhow::Result<ExitCode> {
    // As diff(1) and kubectl diff: 0 same, 1 different, 2 trouble.
    let Some(built) = build_or_report(inputs, settings) else {
        return Ok(ExitCode::from(2));
    };
    let files = write::files(&built.objects)?;
    let text = aigw::diff::diff(&files, against);
    if text.is_empty() {
        eprintln!("aigw: {} is up to date", against.display());
        Ok(ExitCode::SUCCESS)
    } else {
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing to standard output")?;
        eprintln!(
            "aigw: {} differs from the build; run `aigw build ... -o {}`",
            against.display(),
            against.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// `aigw validate`: checks the inputs without building.
fn validate(inputs: &Inputs, namespace: &str) -> anyhow::Result<ExitCode> {
    let read = sources(inputs);
    let diagnostics = read.with(&aigw::check(&read.sources, namespace));
    report(&diagnostics);
    if diagnostics.iter().any(Diagnostic::is_error) {
        Ok(ExitCode::FAILURE)
    } else {
        eprintln!("aigw: {} files valid", read.sources.len());
        Ok(ExitCode::SUCCESS)
    }
}

/// `aigw schema`: the JSON Schemas of the inputs, one file each, in the folder `output`.
fn write_schemas(output: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    for (name, text) in aigw::schemas::all() {
        let path = output.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    aigw::tune_process();
    let cli = Cli::parse();
    let diff = matches!(cli.command, Command::Diff { .. });
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("aigw: {err:#}");
            ExitCode::from(if diff { 2 } else { 1 })
        }
    }
}
