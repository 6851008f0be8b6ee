//! The `mis-gateway` binary: parses the command line and calls into the library.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use mis_gateway::app::App;
use mis_gateway::config::diff::Diff;
use mis_gateway::config::{Config, NoSecrets, Problem, Secrets, SystemSecrets};
use mis_gateway::edge::workers::Placement;
use mis_gateway::telemetry::{LogFormat, Telemetry};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "mis-gateway",
    version,
    about = "Booking gateway between integrators and clinic MIS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The options of the commands that run the gateway (`serve`, `demo`): only theirs, so that
/// `check --help` lists what `check` takes.
#[derive(Args)]
struct RunArgs {
    /// Log format.
    #[arg(
        long,
        env = "MIS_GATEWAY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Threads serving bookings, each with its own event loop and MIS connection pools
    /// (default: one per CPU).
    #[arg(
        long,
        env = "MIS_GATEWAY_WORKER_THREADS",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256)
    )]
    worker_threads: Option<usize>,
    /// Hold each worker thread to a CPU of its own (worker i to the i-th CPU this process may
    /// use): steadier latency on a host or cpuset given to the gateway, worse where other
    /// busy processes share those CPUs.
    /// (The variable takes 1/0, true/false, yes/no, on/off.)
    #[arg(
        long,
        env = "MIS_GATEWAY_PIN_WORKERS",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pin_workers: bool,
}

impl RunArgs {
    fn threads(&self) -> Threads {
        Threads {
            count: self.worker_threads,
            placement: if self.pin_workers {
                Placement::Pin
            } else {
                Placement::Free
            },
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "routes.toml", env = "MIS_GATEWAY_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Validate a routes.toml fully and print a summary; exit 1 on any problem.
    Check {
        #[arg(long, default_value = "routes.toml")]
        config: PathBuf,
        /// Also print every setting that would change against this (live) file.
        #[arg(long)]
        against: Option<PathBuf>,
        /// With --against: exit 3 when there are changes (0 when there are none).
        #[arg(long, requires = "against")]
        exit_code: bool,
        /// Check secrets' names and files' places without reading them (for a pipeline that
        /// has no secrets); certificates are not checked then.
        #[arg(long)]
        no_secrets: bool,
    },
    /// Print the Argon2id PHC string of a password: typed twice without echo on a terminal,
    /// else one line from stdin. At least 15 characters.
    HashPassword,
    /// Ask the admin listener's readiness once (for images without curl): exit 0 when it
    /// answers 200, 1 otherwise.
    Healthcheck {
        /// The admin listener (admin.listen; 0.0.0.0 is probed as 127.0.0.1).
        #[arg(
            long,
            default_value = "127.0.0.1:9090",
            env = "MIS_GATEWAY_HEALTHCHECK_ADDR"
        )]
        addr: String,
        #[arg(long, default_value = "/readyz")]
        path: String,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Run the gateway with in-process mock MIS servers and print a curl that books.
    Demo {
        #[arg(long, default_value = "routes.toml")]
        config: PathBuf,
        #[command(flatten)]
        run: RunArgs,
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
    match cli.command {
        Command::Check {
            config,
            against,
            exit_code,
            no_secrets,
        } => {
            let _logs = Telemetry::init_with(
                LogFormat::Text,
                std::io::stderr,
                mis_gateway::telemetry::Export::Off,
            );
            let secrets: &dyn Secrets = if no_secrets {
                &NoSecrets
            } else {
                &SystemSecrets
            };
            check(&config, against.as_deref(), secrets, exit_code)
        }
        Command::HashPassword => hash_password(),
        Command::Journal(args) => journal(args),
        Command::Healthcheck {
            addr,
            path,
            timeout_ms,
        } => healthcheck(&addr, &path, timeout_ms),
        Command::Serve { config, run } => {
            runtime().block_on(with_telemetry(run.log_format, serve(config, run.threads())))
        }
        Command::Demo { config, run } => {
            runtime().block_on(with_telemetry(run.log_format, demo(config, run.threads())))
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
/// `mis_gateway::edge::workers`), the admin listener, reloads, signals and trace export.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
}

/// `check`: 0 valid (and, with `exit_code`, unchanged), 1 invalid, 3 valid with changes.
fn check(
    path: &std::path::Path,
    against: Option<&std::path::Path>,
    secrets: &dyn Secrets,
    exit_code: bool,
) -> ExitCode {
    let (c, text) = match load_for_check(path, secrets) {
        Ok(loaded) => loaded,
        Err(problems) => {
            report(path, &problems);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{}: OK: {} integrators, {} backends, {} routes (sha256 {}){}",
        path.display(),
        c.integrators.len(),
        c.backends.len(),
        c.routes.len(),
        c.sha256,
        if secrets.resolves() {
            ""
        } else {
            "; secrets and certificates not read (--no-secrets)"
        }
    );
    for w in &c.warnings {
        println!("warning: {w}");
    }
    let Some(old_path) = against else {
        return ExitCode::SUCCESS;
    };
    let (old, old_text) = match load_for_check(old_path, secrets) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("{} (--against) is not valid itself:", old_path.display());
            report(old_path, &problems);
            return ExitCode::FAILURE;
        }
    };
    let diff = Diff::between(&old, &old_text, &c, &text);
    print!("changes against {}:\n{diff}", old_path.display());
    if exit_code && !diff.is_empty() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// The validated config at `path` and its text (for the diff).
fn load_for_check(
    path: &std::path::Path,
    secrets: &dyn Secrets,
) -> Result<(Config, String), Vec<Problem>> {
    let bytes = mis_gateway::config::read(path).map_err(|p| vec![p])?;
    let config = Config::from_file_bytes(&bytes, path, secrets)?;
    Ok((config, String::from_utf8_lossy(&bytes).into_owned()))
}

fn report(path: &std::path::Path, problems: &[Problem]) {
    match problems {
        // The file itself could not be read: the problem names it already.
        [p] if p.location.starts_with(&*path.display().to_string()) => eprintln!("{p}"),
        _ => {
            eprintln!("{}: {} problem(s):", path.display(), problems.len());
            for p in problems {
                eprintln!("  {p}");
            }
        }
    }
}

fn healthcheck(addr: &str, path: &str, timeout_ms: u64) -> ExitCode {
    let addr = addr.replace("0.0.0.0:", "127.0.0.1:");
    let timeout = std::time::Duration::from_millis(timeout_ms.max(1));
    match mis_gateway::edge::healthcheck::probe(&addr, path, timeout) {
        Ok(200) => {
            println!("http://{addr}{path}: 200");
            ExitCode::SUCCESS
        }
        Ok(code) => {
            eprintln!("http://{addr}{path}: {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Fewer characters than NIST SP 800-63B-4 asks of a password used alone; integrators' are
/// machine credentials no one types, so length costs nothing.
const MIN_PASSWORD_CHARS: usize = 15;

fn hash_password() -> ExitCode {
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        eprintln!(
            "the password has {chars} characters; at least {MIN_PASSWORD_CHARS} are needed (e.g. `openssl rand -base64 18`)"
        );
        return ExitCode::FAILURE;
    }
    if password.chars().any(char::is_control) {
        eprintln!("the password has control characters");
        return ExitCode::FAILURE;
    }
    match mis_gateway::policy::auth::hash_password(&password) {
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

/// One password: typed twice without echo when stdin is a terminal, else its first line.
fn read_password() -> Result<String, String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return read_line(&mut stdin.lock())
            .map_err(|e| format!("cannot read a password from stdin: {e}"));
    }
    let first = prompt_hidden("Password (not shown): ")?;
    let again = prompt_hidden("The same again: ")?;
    if first != again {
        return Err("the two passwords differ".into());
    }
    Ok(first)
}

fn read_line(input: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}

/// Reads a line from the terminal with echo off (put back afterwards, also on error).
fn prompt_hidden(prompt: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    // Off before the prompt: whatever is typed once the prompt shows is never echoed.
    #[cfg(unix)]
    let _echo_off =
        EchoOff::new(&stdin).map_err(|e| format!("cannot turn the terminal's echo off: {e}"))?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let line = read_line(&mut stdin.lock()).map_err(|e| format!("cannot read a password: {e}"));
    // The terminal echoes the newline (ECHONL) once echo is back.
    #[cfg(unix)]
    drop(_echo_off);
    line
}

/// The terminal's echo turned off while it lives.
#[cfg(unix)]
struct EchoOff(nix::sys::termios::Termios);

#[cfg(unix)]
impl EchoOff {
    fn new(stdin: &std::io::Stdin) -> std::io::Result<EchoOff> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let before = tcgetattr(stdin)?;
        let mut quiet = before.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(stdin, SetArg::TCSANOW, &quiet)?;
        Ok(EchoOff(before))
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
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
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        shutdown_signal().await;
        mis_gateway::edge::notify::stopping();
    };
    app.run(api, Some(admin), shutdown, true).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Binds the booking and admin listeners named by the live config; an error names the
/// address and the setting it came from.
async fn bind(app: &App) -> Result<(TcpListener, TcpListener), String> {
    let config = app.live.load().config.clone();
    let listen = |addr: std::net::SocketAddr, setting: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} ({setting} in the config): {e}"))
    };
    let api = listen(config.server.listen, "server.listen").await?;
    let admin = listen(config.admin.listen, "admin.listen").await?;
    let (api_at, admin_at) = (
        api.local_addr().map_err(|e| e.to_string())?,
        admin.local_addr().map_err(|e| e.to_string())?,
    );
    tracing::info!(listen = %api_at, admin = %admin_at, workers = app.workers, placement = ?app.placement, "serving bookings");
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
    println!("Run it twice: the second time the MIS answers that the slot is taken.\n");
    println!(
        "Look the booking up, then cancel it (the slot is free again), with the guid it answered:\n"
    );
    println!("{}\n", demo.appointment_curls());
    println!("Ctrl-C stops the demo.");
    if demo.app.gateway.journal.is_some() {
        println!(
            "Each booking is in the journal: mis-gateway journal --config {} list",
            path.display()
        );
    }
    let _ = std::io::stdout().flush();
    workers.apply(&mut demo.app);
    let booking_file = demo.booking_file.clone();
    demo.app
        .run(demo.api, Some(demo.admin), shutdown_signal(), true)
        .await;
    let _ = std::fs::remove_file(booking_file);
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
