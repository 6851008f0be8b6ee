//! The `mis-gateway` binary: parses the command line and calls into the library.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use mis_gateway::app::App;
use mis_gateway::config::diff::Diff;
use mis_gateway::config::{Config, SystemSecrets};
use mis_gateway::telemetry::{LogFormat, Telemetry};
use mis_gateway::workers::Placement;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "mis-gateway",
    version,
    about = "Booking gateway between integrators and clinic MIS"
)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "MIS_GATEWAY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Threads serving bookings, each with its own event loop and MIS connection pools
    /// (default: one per CPU).
    #[arg(long, global = true, env = "MIS_GATEWAY_WORKER_THREADS")]
    worker_threads: Option<usize>,
    /// Hold each worker thread to a CPU of its own (worker i to the i-th CPU this process may
    /// use): steadier latency on a host or cpuset given to the gateway, worse where other
    /// busy processes share those CPUs.
    /// (The variable takes 1/0, true/false, yes/no, on/off.)
    #[arg(
        long,
        global = true,
        env = "MIS_GATEWAY_PIN_WORKERS",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pin_workers: bool,
    /// Unpinned, let a worker that finds another worker waiting for its CPU move itself to
    /// another CPU (the default; `false`: the kernel alone places the workers).
    /// (The variable takes 1/0, true/false, yes/no, on/off.)
    #[arg(
        long,
        global = true,
        env = "MIS_GATEWAY_SPREAD_WORKERS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    spread_workers: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "routes.toml", env = "MIS_GATEWAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate a routes.toml fully and print a summary; exit non-zero on any problem.
    Check {
        #[arg(long, default_value = "routes.toml")]
        config: PathBuf,
        /// Also print what would change against this (live) file.
        #[arg(long)]
        against: Option<PathBuf>,
    },
    /// Read one password line from stdin and print its Argon2id PHC string.
    HashPassword,
    /// Run the gateway with in-process mock MIS servers and print a curl that books.
    Demo {
        #[arg(long, default_value = "routes.toml")]
        config: PathBuf,
    },
    /// List, show, resolve and export booking journal records (through the running
    /// gateway's admin listener).
    Journal(mis_gateway::journal::cli::Args),
}

/// mimalloc: the booking path allocates many small, short-lived objects across threads, which
/// glibc's malloc serves with more instructions and lock traffic (see the commit's figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format;
    let workers = Threads {
        count: cli.worker_threads,
        placement: match (cli.pin_workers, cli.spread_workers) {
            (true, _) => Placement::Pin,
            (false, true) => Placement::Spread,
            (false, false) => Placement::Free,
        },
    };
    match cli.command {
        Command::Check { config, against } => {
            let _logs =
                Telemetry::init_with(format, std::io::stderr, mis_gateway::telemetry::Export::Off);
            check(&config, against.as_deref())
        }
        Command::HashPassword => hash_password(),
        Command::Journal(args) => journal(args),
        Command::Serve { config } => {
            runtime().block_on(with_telemetry(format, serve(config, workers)))
        }
        Command::Demo { config } => {
            runtime().block_on(with_telemetry(format, demo(config, workers)))
        }
    }
}

fn journal(args: mis_gateway::journal::cli::Args) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match runtime().block_on(mis_gateway::journal::cli::run(args, &mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mis-gateway journal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The worker-thread options of `serve` and `demo`.
#[derive(Clone, Copy)]
struct Threads {
    count: Option<usize>,
    placement: Placement,
}

impl Threads {
    fn apply(self, app: &mut App) {
        if let Some(n) = self.count.filter(|n| *n > 0) {
            app.workers = n;
        }
        app.placement = self.placement;
    }
}

/// Runs `main` with logs and trace export installed, and flushes the export at the end.
async fn with_telemetry(
    format: LogFormat,
    main: impl std::future::Future<Output = ExitCode>,
) -> ExitCode {
    let telemetry = Telemetry::init(format);
    let code = main.await;
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}

/// The main runtime: accepting connections (served by the worker threads, see
/// `mis_gateway::workers`), the admin listener, reloads, signals and trace export.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}

fn check(path: &std::path::Path, against: Option<&std::path::Path>) -> ExitCode {
    match Config::load(path, &SystemSecrets) {
        Ok(c) => {
            println!(
                "{}: OK: {} integrators, {} backends, {} routes (sha256 {})",
                path.display(),
                c.integrators.len(),
                c.backends.len(),
                c.routes.len(),
                c.sha256
            );
            for w in &c.warnings {
                println!("warning: {w}");
            }
            if let Some(old_path) = against {
                match Config::load(old_path, &SystemSecrets) {
                    Ok(old) => print!(
                        "changes against {}:\n{}",
                        old_path.display(),
                        Diff::between(&old, &c)
                    ),
                    Err(problems) => {
                        eprintln!("{} (--against) is not valid itself:", old_path.display());
                        for p in problems {
                            eprintln!("  {p}");
                        }
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{}: {} problem(s):", path.display(), problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
            ExitCode::FAILURE
        }
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("cannot read a password from stdin");
        return ExitCode::FAILURE;
    }
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if password.is_empty() {
        eprintln!("the password is empty");
        return ExitCode::FAILURE;
    }
    match mis_gateway::auth::hash_password(password) {
        Ok(h) => {
            let _ = writeln!(std::io::stdout(), "{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hashing failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf, workers: Threads) -> ExitCode {
    let mut app = match App::from_file(path, Arc::new(SystemSecrets)) {
        Ok(app) => app,
        Err(problems) => {
            for p in problems {
                tracing::error!(problem = %p, "invalid configuration");
            }
            return ExitCode::FAILURE;
        }
    };
    workers.apply(&mut app);
    let (api, admin) = match bind(&app).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(error = %e, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    app.run(api, Some(admin), shutdown_signal(), true).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Binds the booking and admin listeners named by the live config.
async fn bind(app: &App) -> std::io::Result<(TcpListener, TcpListener)> {
    let config = app.live.load().config.clone();
    let api = TcpListener::bind(config.server.listen).await?;
    let admin = TcpListener::bind(config.admin.listen).await?;
    tracing::info!(listen = %api.local_addr()?, admin = %admin.local_addr()?, workers = app.workers, placement = ?app.placement, "serving bookings");
    Ok((api, admin))
}

async fn demo(path: PathBuf, workers: Threads) -> ExitCode {
    let mut demo = match mis_gateway::demo::start(&path).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "mis-gateway demo: {} mock MIS running; book the seed's example with:\n",
        demo.mocks.len()
    );
    println!("{}\n", demo.curl());
    println!(
        "Run it twice: the second time the MIS answers that the slot is taken. Ctrl-C stops the demo."
    );
    if demo.app.gateway.journal.is_some() {
        println!(
            "Each booking is in the journal: mis-gateway journal --config {} list",
            path.display()
        );
    }
    let _ = std::io::stdout().flush();
    workers.apply(&mut demo.app);
    demo.app
        .run(demo.api, Some(demo.admin), shutdown_signal(), true)
        .await;
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; draining");
}
