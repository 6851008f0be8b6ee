//! `mis-gateway demo`: the shipped routes.toml, a mock MIS on every loopback backend address it
//! names, the gateway in front, and a ready `curl` that books the seed's example.

pub mod mock_mis;

use std::path::{Path, PathBuf};

use tokio::net::TcpListener;

use crate::app::App;
use crate::config::{Secrets, SystemSecrets};
use crate::demo::mock_mis::{MockMis, clinic};

/// The seed's example booking.
pub const SEED_BOOKING: &str = include_str!("../../tests/data/seed_request.json");
/// The integrator whose hash the shipped routes.toml carries (demo only: replace it in production).
pub const DEMO_LOGIN: &str = "portal";
pub const DEMO_PASSWORD: &str = "portal-demo";

/// Backend secrets from the environment when set, otherwise a demo value: the demo's mock MIS
/// expects whatever the gateway will send, so it books out of the box.
pub struct DemoSecrets;

impl Secrets for DemoSecrets {
    fn env(&self, name: &str) -> Option<String> {
        SystemSecrets
            .env(name)
            .or_else(|| Some(format!("demo-{}", name.to_ascii_lowercase())))
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        SystemSecrets.file(path)
    }
}

/// What the demo started, for the caller to print or test against.
pub struct Demo {
    pub app: App,
    pub api: TcpListener,
    pub admin: TcpListener,
    pub mocks: Vec<MockMis>,
    pub booking_file: PathBuf,
}

/// Loads `config_path`, starts the mock MIS servers and binds the gateway's listener.
pub async fn start(config_path: &Path) -> Result<Demo, String> {
    let app = App::from_file(config_path.to_path_buf(), std::sync::Arc::new(DemoSecrets)).map_err(
        |problems| {
            let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
            format!(
                "{} is not valid:\n{}",
                config_path.display(),
                lines.join("\n")
            )
        },
    )?;
    let config = app.live.load().config.clone();
    let mut mocks = Vec::new();
    for b in &config.backends {
        let authority = b
            .appointments_uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let loopback = authority
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback());
        if b.appointments_uri.scheme_str() != Some("http") || !loopback {
            tracing::warn!(backend = %b.name, "not a loopback http:// backend; the demo starts no mock for it");
            continue;
        }
        let listener = TcpListener::bind(&authority)
            .await
            .map_err(|e| format!("cannot bind {authority} for the mock MIS {}: {e}", b.name))?;
        let expected = b
            .authorization
            .to_str()
            .map_err(|_| "backend credentials are not ASCII")?
            .to_owned();
        mocks.push(MockMis::start(
            listener,
            clinic(expected, b.timezone.clone()),
        ));
    }
    let listen = config.server.listen;
    let api = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot bind the gateway on {listen}: {e}"))?;
    let admin = TcpListener::bind(config.admin.listen).await.map_err(|e| {
        format!(
            "cannot bind the admin listener on {}: {e}",
            config.admin.listen
        )
    })?;
    // A file of this process's own, made new (never one already there: a shared, predictable
    // name let two demos overwrite each other's, and followed whatever stood at that path).
    let booking_file = std::env::temp_dir().join(format!(
        "mis-gateway-demo-booking-{}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&booking_file);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&booking_file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, SEED_BOOKING.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", booking_file.display()))?;
    Ok(Demo {
        app,
        api,
        admin,
        mocks,
        booking_file,
    })
}

impl Demo {
    /// Where the demo's gateway listens.
    fn addr(&self) -> String {
        self.api
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// The command that books the seed's example through the running demo.
    pub fn curl(&self) -> String {
        let addr = self.addr();
        format!(
            "curl -sS -u {DEMO_LOGIN}:{DEMO_PASSWORD} -H 'Content-Type: application/json' \\\n     --data-binary @{} http://{addr}/dir/appointments",
            self.booking_file.display()
        )
    }

    /// The commands that look up and cancel a booking by the guid it answered (`GUID`).
    pub fn appointment_curls(&self) -> String {
        let addr = self.addr();
        format!(
            "curl -sS -u {DEMO_LOGIN}:{DEMO_PASSWORD} http://{addr}/dir/appointments/GUID\n\
             curl -sS -u {DEMO_LOGIN}:{DEMO_PASSWORD} -X DELETE 'http://{addr}/dir/appointments/GUID?reason=patient_decline'"
        )
    }
}
