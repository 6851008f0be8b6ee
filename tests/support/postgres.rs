//! A real PostgreSQL server for one test: `initdb` + `pg_ctl` from Debian's package, run as the
//! `postgres` user (they refuse root) in a temporary folder, on a free loopback port, with
//! password (SCRAM) authentication. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where Debian's `postgresql` package puts the server's programs (not on PATH): the
/// newest `/usr/lib/postgresql/<major>/bin` that has `initdb`.
pub fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().expect("a PostgreSQL server with initdb").1
}
/// The superuser's password in every test server.
const SUPERUSER_PASSWORD: &str = "pg-test-superuser";

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Runs `program args` as the `postgres` user when we are root (CI), as ourselves otherwise.
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn uid_of_postgres() -> Option<u32> {
    let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

impl Postgres {
    /// Starts a fresh server; panics with its log if it does not come up.
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("a temporary folder");
        if let Some(uid) = uid_of_postgres() {
            std::os::unix::fs::chown(dir.path(), Some(uid), None)
                .expect("the test folder can be given to the postgres user");
        }
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        if let Some(uid) = uid_of_postgres() {
            std::os::unix::fs::chown(&pwfile, Some(uid), None).unwrap();
        }
        let bin = pg_bin();
        let init = as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .output()
        .expect("initdb runs (apt-get install postgresql)");
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        // A port the OS just handed out; pg_ctl retries nothing, so a clash fails loudly.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.path().join("log");
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=50",
            dir.path().display()
        );
        let start = as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .output()
        .expect("pg_ctl runs");
        assert!(
            start.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&start.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Postgres { port, dir }
    }

    /// Creates a login role with `password` owning a new database `db`.
    pub async fn create_db(&self, user: &str, password: &str, db: &str) {
        let client = self.superuser().await;
        // Two statements: CREATE DATABASE refuses to run inside a multi-statement batch.
        client
            .batch_execute(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"))
            .await
            .expect("the role is created");
        client
            .batch_execute(&format!("CREATE DATABASE {db} OWNER {user}"))
            .await
            .expect("the database is created");
    }

    /// A superuser connection to `postgres` (for reading every row back).
    pub async fn superuser(&self) -> tokio_postgres::Client {
        self.connect("postgres", SUPERUSER_PASSWORD, "postgres")
            .await
    }

    pub async fn connect(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10))
            .connect(tokio_postgres::NoTls)
            .await
            .expect("the test server accepts the connection");
        tokio::spawn(conn);
        client
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server and every process it forked (one per
    /// connection): the whole cluster hangs or resumes, as a stalled host would.
    pub fn signal_all(&self, signal: &str) {
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).expect("the server's pid file");
        let postmaster: u32 = text.lines().next().unwrap().trim().parse().unwrap();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`: the name may hold spaces, the rest follows its ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(pids.iter().map(u32::to_string))
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pids:?}");
    }

    /// `postgres://user@127.0.0.1:PORT/db`, without the password.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(
            &pg_bin().join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .output();
    }
}
