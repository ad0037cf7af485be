//! The `aigw` command line: a thin layer over the `aigw` library.
//!
//! Manifests go to standard output (or a folder); diagnostics and logs go to standard error
//! only, so `aigw build . | kubectl apply -f -` and Argo CD plugins see nothing but YAML.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use aigw::diag::Diagnostic;
use aigw::{BuildOptions, load, plan, write};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

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
    /// Compile the custom resources into manifests.
    Build {
        #[command(flatten)]
        inputs: Inputs,
        /// `-` for standard output, or a folder (one file per object plus kustomization.yaml).
        #[arg(short, long, default_value = "-")]
        output: PathBuf,
        #[command(flatten)]
        settings: Settings,
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
        #[arg(long, default_value = "default")]
        namespace: String,
    },
    /// Write the JSON Schemas of the input kinds and of the filter config.
    Schema {
        /// Output folder.
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Args)]
struct Inputs {
    /// Files, folders (searched recursively for *.yaml and *.yml) or `-` for standard input.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Args)]
struct Settings {
    /// Namespace of namespaced objects that name none.
    #[arg(long, default_value = "default")]
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
    /// Keep `${` as it is. By default it is written `$${`, so Flux post-build substitution
    /// leaves values alone; use this when the output is not applied by Flux.
    #[arg(long)]
    no_flux_escape: bool,
}

impl Settings {
    fn options(&self) -> BuildOptions {
        BuildOptions {
            default_namespace: self.namespace.clone(),
            extproc_image: self.extproc_image.clone(),
            replicas: self.replicas,
            max_request_body_bytes: self.max_request_body_bytes,
            include_secrets: self.include_secrets,
            flux_escape: !self.no_flux_escape,
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

fn sources(inputs: &Inputs) -> anyhow::Result<Vec<load::Source>> {
    load::read_sources(&inputs.paths).map_err(|d| anyhow::anyhow!(d.message))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build {
            inputs,
            output,
            settings,
        } => {
            let sources = sources(&inputs)?;
            let built = match aigw::build(&sources, &settings.options()) {
                Ok(built) => built,
                Err(diagnostics) => {
                    report(&diagnostics);
                    return Ok(ExitCode::FAILURE);
                }
            };
            report(&built.warnings);
            if output.as_os_str() == "-" {
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(built.stream().as_bytes())
                    .context("writing to standard output")?;
                stdout.flush().context("writing to standard output")?;
            } else {
                let files = write::files(&built.objects)?;
                write::write_dir(&output, &files)?;
                eprintln!(
                    "aigw: wrote {} objects to {}",
                    built.objects.len(),
                    output.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff {
            inputs,
            against,
            settings,
        } => {
            let sources = sources(&inputs)?;
            let built = match aigw::build(&sources, &settings.options()) {
                Ok(built) => built,
                Err(diagnostics) => {
                    report(&diagnostics);
                    return Ok(ExitCode::FAILURE);
                }
            };
            report(&built.warnings);
            let files = write::files(&built.objects)?;
            let text = aigw::diff::diff(&files, &against);
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
        Command::Validate { inputs, namespace } => {
            let sources = sources(&inputs)?;
            let diagnostics = aigw::check(&sources, &namespace);
            report(&diagnostics);
            if diagnostics.iter().any(Diagnostic::is_error) {
                Ok(ExitCode::FAILURE)
            } else {
                eprintln!("aigw: {} files valid", sources.len());
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Schema { output } => {
            std::fs::create_dir_all(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            for (name, text) in aigw::schemas::all() {
                let path = output.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("aigw: {err:#}");
            ExitCode::FAILURE
        }
    }
}
