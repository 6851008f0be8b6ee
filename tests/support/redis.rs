//! A throwaway `redis-server` for tests (Debian package `redis-server`): a free loopback port,
//! no persistence, killed on drop.

use std::process::Stdio;
use std::time::Duration;

/// A throwaway `redis-server` child process: no persistence, loopback only, killed on drop.
pub struct RedisServer {
    pub child: tokio::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(server) = Self::start_on(port).await {
                return server;
            }
        }
        panic!("redis-server did not start on a free port");
    }

    /// Starts on `port`; None if the server exits (the port was taken meanwhile).
    pub async fn start_on(port: u16) -> Option<RedisServer> {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is on PATH (Debian package `redis-server`)");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            if ping(port).await {
                return Some(RedisServer {
                    child,
                    port,
                    _dir: dir,
                });
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Every key of this store with its value.
    pub async fn entries(&self) -> Vec<(String, String)> {
        let mut con = self.connection().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut con)
            .await
            .unwrap();
        let mut out = Vec::new();
        for k in keys {
            let v: String = redis::cmd("GET")
                .arg(&k)
                .query_async(&mut con)
                .await
                .unwrap();
            out.push((k, v));
        }
        out
    }

    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }
}

pub async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"+PONG\r\n"
    )
}
