//! `mis-gateway journal …`: the ops CLI. It talks to the running gateway's admin listener named
//! in routes.toml (`[admin] listen`, token from `token_env`), so a resolution reaches the same
//! idempotency store the gateway uses, and the CLI needs no database credentials.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway's routes.toml: its `[admin]` section says where the admin listener is.
    #[arg(long, default_value = "routes.toml", env = "MIS_GATEWAY_CONFIG")]
    pub config: std::path::PathBuf,
    /// The admin listener's address, instead of `[admin] listen`.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List records, newest first.
    List {
        /// booked, rejected, not_sent, unknown, replayed or cancelled.
        #[arg(long)]
        outcome: Option<String>,
        /// book or cancel.
        #[arg(long)]
        operation: Option<String>,
        /// Only `unknown` records nobody resolved yet.
        #[arg(long)]
        unresolved: bool,
        #[arg(long)]
        backend: Option<String>,
        #[arg(long)]
        integrator: Option<String>,
        /// An RFC 3339 time or an age such as 30m, 2h, 7d.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print one record as JSON.
    Show { request_id: String },
    /// Operator actions (sign-ins, resolutions, reloads), newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Record what the clinic said about an `unknown` booking or cancellation.
    Resolve {
        request_id: String,
        /// The appointment's guid, if the clinic has the booking.
        #[arg(long, requires = "number", conflicts_with = "not_booked")]
        booked: Option<String>,
        /// The appointment's number (with --booked).
        #[arg(long, requires = "booked")]
        number: Option<String>,
        /// The clinic has no such booking: the key is released, a retry is sent.
        #[arg(long)]
        not_booked: bool,
        /// A cancellation: the clinic cancelled the appointment.
        #[arg(long, conflicts_with_all = ["booked", "not_booked", "not_cancelled"])]
        cancelled: bool,
        /// A cancellation: the clinic still has the appointment.
        #[arg(long, conflicts_with_all = ["booked", "not_booked"])]
        not_cancelled: bool,
        /// Technical note (a ticket reference): never patient data.
        #[arg(long)]
        note: Option<String>,
    },
    /// Every record in a time range, as JSON lines or CSV.
    Export {
        #[arg(long, value_parser = ["jsonl", "csv"], default_value = "jsonl")]
        format: String,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
}

/// Runs `args`, writing to `out`; the error is the message for stderr.
pub async fn run(args: Args, out: &mut dyn std::io::Write) -> Result<(), String> {
    let (addr, token) = admin_of(&args.config, args.admin)?;
    let api = Api {
        base: format!("http://{addr}"),
        token,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    let w = |out: &mut dyn std::io::Write, s: &str| {
        writeln!(out, "{s}").map_err(|e| format!("cannot write the output: {e}"))
    };
    match args.command {
        Command::List {
            outcome,
            operation,
            unresolved,
            backend,
            integrator,
            since,
            until,
            limit,
        } => {
            let mut q = vec![format!("limit={limit}")];
            push(&mut q, "outcome", outcome);
            push(&mut q, "operation", operation);
            if unresolved {
                q.push("unresolved=true".into());
            }
            push(&mut q, "backend", backend);
            push(&mut q, "integrator", integrator);
            push(&mut q, "since", since.map(|s| when(&s)).transpose()?);
            push(&mut q, "until", until.map(|s| when(&s)).transpose()?);
            let page = api.get(&format!("/admin/journal?{}", q.join("&"))).await?;
            w(
                out,
                "TIME                              REQUEST ID                            OPERATION OUTCOME   STATUS CODE   BACKEND          INTEGRATOR       RESOLVED",
            )?;
            for r in page["records"].as_array().into_iter().flatten() {
                let resolved = match &r["resolution"] {
                    Value::Null => "-".to_owned(),
                    res if res["booked"] == true => "booked".into(),
                    res if res["cancelled"] == true => "cancelled".into(),
                    res if res["cancelled"] == false => "not_cancelled".into(),
                    _ => "not_booked".into(),
                };
                w(
                    out,
                    &format!(
                        "{:<33} {:<37} {:<9} {:<9} {:<6} {:<6} {:<16} {:<16} {}",
                        s(&r["time"]),
                        s(&r["requestId"]),
                        s(&r["operation"]),
                        s(&r["outcome"]),
                        r["status"],
                        s(&r["messageCode"]),
                        s(&r["backend"]),
                        s(&r["integrator"]),
                        resolved
                    ),
                )?;
            }
            if !page["next"].is_null() {
                w(out, "(more: narrow the range or raise --limit)")?;
            }
        }
        Command::Audit { limit, json } => {
            let page = api.get(&format!("/admin/audit?limit={limit}")).await?;
            if !json {
                w(
                    out,
                    "TIME                              WHO              VIA         ACTION          OUTCOME  FROM             TARGET",
                )?;
            }
            for e in page["entries"].as_array().into_iter().flatten() {
                if json {
                    w(out, &e.to_string())?;
                    continue;
                }
                w(
                    out,
                    &format!(
                        "{:<33} {:<16} {:<11} {:<15} {:<8} {:<16} {}",
                        s(&e["time"]),
                        s(&e["who"]),
                        s(&e["via"]),
                        s(&e["action"]),
                        s(&e["outcome"]),
                        s(&e["address"]),
                        s(&e["target"]),
                    ),
                )?;
            }
        }
        Command::Show { request_id } => {
            let r = api.get(&format!("/admin/journal/{request_id}")).await?;
            w(out, &serde_json::to_string_pretty(&r).unwrap_or_default())?;
        }
        Command::Resolve {
            request_id,
            booked,
            number,
            not_booked,
            cancelled,
            not_cancelled,
            note,
        } => {
            let mut body = match (booked, number, not_booked, cancelled, not_cancelled) {
                (Some(guid), Some(number), false, false, false) => {
                    json!({"booked": true, "guid": guid, "number": number})
                }
                (None, None, true, false, false) => json!({"booked": false}),
                (None, None, false, true, false) => json!({"cancelled": true}),
                (None, None, false, false, true) => json!({"cancelled": false}),
                _ => {
                    return Err("give one of --booked GUID --number N, --not-booked (a booking), --cancelled or --not-cancelled (a cancellation)".into());
                }
            };
            if let Some(n) = note {
                body["note"] = json!(n);
            }
            let r = api
                .post(&format!("/admin/journal/{request_id}/resolve"), body)
                .await?;
            w(out, &serde_json::to_string_pretty(&r).unwrap_or_default())?;
        }
        Command::Export {
            format,
            since,
            until,
        } => {
            let mut q = vec!["limit=1000".to_owned()];
            push(&mut q, "since", since.map(|s| when(&s)).transpose()?);
            push(&mut q, "until", until.map(|s| when(&s)).transpose()?);
            if format == "csv" {
                w(out, &CSV_COLUMNS.join(","))?;
            }
            let mut cursor: Option<String> = None;
            loop {
                let mut page_q = q.clone();
                push(&mut page_q, "cursor", cursor.take());
                let page = api
                    .get(&format!("/admin/journal?{}", page_q.join("&")))
                    .await?;
                for r in page["records"].as_array().into_iter().flatten() {
                    let line = if format == "csv" {
                        csv_line(r)
                    } else {
                        r.to_string()
                    };
                    w(out, &line)?;
                }
                match page["next"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
        }
    }
    Ok(())
}

const CSV_COLUMNS: &[&str] = &[
    "requestId",
    "time",
    "integrator",
    "lpu",
    "backend",
    "slot",
    "directionGuid",
    "outcome",
    "status",
    "messageCode",
    "misStatus",
    "durationMs",
    "traceId",
    "appointmentGuid",
    "appointmentNumber",
    "resolutionTime",
    "resolutionBooked",
    "resolutionGuid",
    "resolutionNumber",
    "resolutionNote",
    "operation",
    "cancelReason",
    "resolutionCancelled",
    "cancelledTime",
];

fn csv_line(r: &Value) -> String {
    let field = |name: &str| -> Value {
        match name {
            "appointmentGuid" => r["appointment"]["guid"].clone(),
            "appointmentNumber" => r["appointment"]["number"].clone(),
            "resolutionTime" => r["resolution"]["time"].clone(),
            "resolutionBooked" => r["resolution"]["booked"].clone(),
            "resolutionCancelled" => r["resolution"]["cancelled"].clone(),
            "cancelledTime" => r["cancelled"]["time"].clone(),
            "cancelReason" => match &r["cancelReason"] {
                Value::Null => r["cancelled"]["reason"].clone(),
                v => v.clone(),
            },
            "resolutionGuid" => r["resolution"]["guid"].clone(),
            "resolutionNumber" => r["resolution"]["number"].clone(),
            "resolutionNote" => r["resolution"]["note"].clone(),
            other => r[other].clone(),
        }
    };
    CSV_COLUMNS
        .iter()
        .map(|c| {
            let text = match field(c) {
                Value::Null => String::new(),
                Value::String(s) => s,
                other => other.to_string(),
            };
            if text.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", text.replace('"', "\"\""))
            } else {
                text
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_owned()
}

fn push(q: &mut Vec<String>, name: &str, v: Option<String>) {
    if let Some(v) = v {
        q.push(format!("{name}={}", encode(&v)));
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An RFC 3339 time as given, or an age (`90s`, `30m`, `2h`, `7d`) before now.
pub fn when(s: &str) -> Result<String, String> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.to_string());
    }
    let bad = || format!("{s:?} is neither an RFC 3339 time nor an age such as 30m, 2h, 7d");
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    let t = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(secs as i64))
        .map_err(|_| bad())?;
    Ok(t.to_string())
}

/// Where the admin listener is and its token, from routes.toml's `[admin]` alone (the CLI
/// does not need the backends' secrets).
fn admin_of(
    config: &Path,
    over: Option<SocketAddr>,
) -> Result<(SocketAddr, Option<String>), String> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read {}: {}", config.display(), e.kind()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|_| format!("{} is not valid TOML", config.display()))?;
    let admin = table.get("admin").and_then(|a| a.as_table());
    let listen = admin
        .and_then(|a| a.get("listen"))
        .and_then(|l| l.as_str())
        .unwrap_or("127.0.0.1:9090");
    let mut addr: SocketAddr = match over {
        Some(a) => a,
        None => listen
            .parse()
            .map_err(|_| format!("admin.listen in {} is not an address", config.display()))?,
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let token = match admin
        .and_then(|a| a.get("token_env"))
        .and_then(|t| t.as_str())
    {
        None => None,
        Some(name) => Some(std::env::var(name).map_err(|_| {
            format!("admin.token_env names {name}, which is not set in this environment")
        })?),
    };
    Ok((addr, token))
}

struct Api {
    base: String,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Api {
    async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(Method::GET, path, Bytes::new()).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.call(Method::POST, path, Bytes::from(body.to_string()))
            .await
    }

    async fn call(&self, method: Method, path: &str, body: Bytes) -> Result<Value, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|_| "the request id or filter is not usable in a URL".to_owned())?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| format!("the admin listener at {} did not answer", self.base))?
            .map_err(|_| format!("cannot reach the admin listener at {}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| "the admin listener's answer broke off".to_owned())?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status == StatusCode::OK {
            Ok(v)
        } else {
            Err(format!(
                "{}: {}",
                status,
                v["error"]
                    .as_str()
                    .unwrap_or("the admin listener refused the request")
            ))
        }
    }
}
