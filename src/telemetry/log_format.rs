//! The log line of `serve`, text or JSON, written field by field without the generic
//! formatting machinery: one line per event, `timestamp level target: message key=value ...`
//! (text) or one flat JSON object per line (JSON), the shapes `tracing-subscriber`'s own `Full`
//! and flattened `Json` formats print.
//!
//! Why our own: the access line is written for every request, and the stock formatters make a
//! `core::fmt` pass per field, wrap fields for ANSI colour even with colour off, compute the
//! calendar per timestamp and build a `serde_json` map for JSON. Here the date and time are
//! computed once a second per thread, numbers go through `itoa`/`ryu`, and strings are copied
//! with an escape only where needed (`Debug`/`Display` values still use `core::fmt`).

use std::cell::Cell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter installed by [`crate::telemetry`].
#[derive(Debug, Clone, Copy)]
pub struct LineFormat {
    json: bool,
    ansi: bool,
}

impl LineFormat {
    /// `2026-11-29T11:03:53.126020Z  INFO access: booking request_id="…" status=200 …`;
    /// with `ansi`, the level is coloured.
    pub fn text(ansi: bool) -> Self {
        LineFormat { json: false, ansi }
    }

    /// `{"timestamp":"…","level":"INFO","target":"access","message":"booking",…}`.
    pub fn json() -> Self {
        LineFormat {
            json: true,
            ansi: false,
        }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The line is put together in a buffer of our own and handed over in one piece: the
        // `Writer` is a `dyn fmt::Write`, and a line written to it directly is some sixty small
        // dynamic calls.
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.write_line(&mut line, event)?;
                let done = w.write_str(&line);
                if line.capacity() > LINE_KEEP {
                    *line = String::new();
                }
                done
            }
            // An event formatted while this thread formats another (a `Debug` that logs).
            Err(_) => {
                let mut line = String::new();
                self.write_line(&mut line, event)?;
                w.write_str(&line)
            }
        })
    }
}

thread_local! {
    /// The line being formatted on this thread, its capacity kept for the next one.
    static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// A line buffer grown past this by an exceptional event is not kept.
const LINE_KEEP: usize = 16 * 1024;

impl LineFormat {
    fn write_line(&self, w: &mut String, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        if self.json {
            w.push_str("{\"timestamp\":\"");
            timestamp(w)?;
            w.push_str("\",\"level\":\"");
            w.push_str(meta.level().as_str());
            w.push_str("\",\"target\":");
            json_str(w, meta.target())?;
        } else {
            timestamp(w)?;
            w.push_str(level_text(meta.level(), self.ansi));
            w.push_str(meta.target());
            w.push(':');
        }
        let mut fields = Fields {
            w,
            json: self.json,
            err: Ok(()),
        };
        event.record(&mut fields);
        fields.err?;
        w.push_str(if self.json { "}\n" } else { "\n" });
        Ok(())
    }
}

/// The level padded to five columns with its separating spaces, as the stock format prints it.
fn level_text(level: &Level, ansi: bool) -> &'static str {
    match (*level, ansi) {
        (Level::ERROR, false) => " ERROR ",
        (Level::WARN, false) => "  WARN ",
        (Level::INFO, false) => "  INFO ",
        (Level::DEBUG, false) => " DEBUG ",
        (Level::TRACE, false) => " TRACE ",
        (Level::ERROR, true) => " \x1b[31mERROR\x1b[0m ",
        (Level::WARN, true) => " \x1b[33m WARN\x1b[0m ",
        (Level::INFO, true) => " \x1b[32m INFO\x1b[0m ",
        (Level::DEBUG, true) => " \x1b[34mDEBUG\x1b[0m ",
        (Level::TRACE, true) => " \x1b[35mTRACE\x1b[0m ",
    }
}

thread_local! {
    /// The second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS` text.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [b'0'; 19])) };
}

/// RFC 3339 in UTC to the microsecond: `2026-11-29T11:03:53.126020Z`.
fn timestamp(w: &mut impl Write) -> fmt::Result {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let ts = i64::try_from(secs)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        // `Timestamp`'s Display of a whole second is `YYYY-MM-DDTHH:MM:SSZ`.
        let s = ts.to_string();
        text.copy_from_slice(&s.as_bytes()[..19]);
        SECOND.set((secs, text));
    }
    // The 19 bytes were copied from a `String`, and are ASCII digits and separators.
    w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    let mut frac = *b".000000Z";
    let mut micros = now.subsec_micros();
    for d in frac[1..7].iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    w.write_str(std::str::from_utf8(&frac).map_err(|_| fmt::Error)?)
}

/// `f` rounded to three decimals (the access line's milliseconds, to the microsecond). A
/// value that rounds to zero is zero, never `-0.0` (adding `+0.0` turns `-0.0` into `0.0`).
fn rounded(f: f64) -> f64 {
    (f * 1e3).round() / 1e3 + 0.0
}

/// What `ryu` writes for [`rounded`]`(f)`, without going through floating point for the
/// values the access line has (0 to a billion): the shortest decimal that reads back as the
/// double nearest to k/1000 is k/1000 itself, its trailing zeros dropped (`.0` kept).
fn write_rounded(w: &mut impl Write, f: f64) -> fmt::Result {
    let k = (f * 1e3).round();
    if !(0.0..1e12).contains(&k) {
        return w.write_str(ryu::Buffer::new().format_finite(rounded(f)));
    }
    let k = k as u64;
    let frac = k % 1000;
    w.write_str(itoa::Buffer::new().format(k / 1000))?;
    let digit = |d: u64| b'0' + d as u8;
    let digits = [
        b'.',
        digit(frac / 100),
        digit(frac / 10 % 10),
        digit(frac % 10),
    ];
    let len = match frac {
        f if f % 100 == 0 => 2,
        f if f % 10 == 0 => 3,
        _ => 4,
    };
    // ASCII digits and a dot.
    w.write_str(std::str::from_utf8(&digits[..len]).map_err(|_| fmt::Error)?)
}

/// Writes an event's fields after the line's head, `key=value` (text) or `,"key":value` (JSON).
struct Fields<'a> {
    w: &'a mut String,
    json: bool,
    err: fmt::Result,
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.err.is_err() {
            return;
        }
        self.err = (|| {
            if self.json {
                self.w.write_char(',')?;
                json_str(self.w, field.name())?;
                self.w.write_char(':')?;
            } else {
                self.w.write_char(' ')?;
                if field.name() != "message" {
                    self.w.write_str(field.name())?;
                    self.w.write_char('=')?;
                }
            }
            value(self.w)
        })();
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let json = self.json;
        let message = field.name() == "message";
        self.put(field, |w| {
            if json {
                json_str(w, value)
            } else if message {
                w.write_str(value)
            } else if crate::wire::json::printable_unquoted(value.as_bytes()) {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let json = self.json;
        self.put(field, |w| {
            if value.is_finite() {
                write_rounded(w, value)
            } else if json {
                // JSON has no NaN or infinity.
                w.write_str("null")
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let json = self.json;
        self.put(field, |w| {
            if json {
                w.write_char('"')?;
                write!(JsonEscaped(&mut *w), "{value:?}")?;
                w.write_char('"')
            } else {
                write!(w, "{value:?}")
            }
        });
    }
}

/// `s` as a JSON string literal.
fn json_str(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscaped(&mut *w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string.
struct JsonEscaped<W>(W);

impl<W: Write> Write for JsonEscaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::wire::json::escape_json(s, |piece| self.0.write_str(piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn capture(format: LineFormat, f: impl FnOnce()) -> String {
        let sink = crate::telemetry::TestLines::default();
        let out = sink.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || out.clone())
            .event_format(format);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        sink.text()
    }

    fn access_event() {
        let id = uuid::Uuid::from_u128(0x1dadf64c_f34a_4023_98a6_3e7b7be4f243);
        tracing::info!(
            target: "access",
            request_id = "r-1",
            note = "say \"hi\"\n\u{1}",
            lpu = %id,
            status = 200u16,
            delta = -3i64,
            replayed = false,
            mis_ms = 0.652_189_999_999_999_9,
            bad = f64::NAN,
            "booking"
        );
    }

    #[test]
    fn text_line_has_the_stock_shape_with_rounded_milliseconds() {
        let out = capture(LineFormat::text(false), access_event);
        let (ts, rest) = out.split_at(27);
        assert_now(ts);
        assert_eq!(
            rest,
            concat!(
                "  INFO access: booking request_id=\"r-1\" note=\"say \\\"hi\\\"\\n\\u{1}\" ",
                "lpu=1dadf64c-f34a-4023-98a6-3e7b7be4f243 status=200 delta=-3 replayed=false ",
                "mis_ms=0.652 bad=NaN\n"
            )
        );
    }

    #[test]
    fn json_line_parses_and_keeps_types() {
        let out = capture(LineFormat::json(), access_event);
        assert!(out.ends_with("}\n") && out.lines().count() == 1, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "access");
        assert_eq!(v["message"], "booking");
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["note"], "say \"hi\"\n\u{1}");
        assert_eq!(v["lpu"], "1dadf64c-f34a-4023-98a6-3e7b7be4f243");
        assert_eq!(v["status"], 200);
        assert_eq!(v["delta"], -3);
        assert_eq!(v["replayed"], false);
        assert_eq!(v["mis_ms"], 0.652);
        assert!(v["bad"].is_null());
        assert_now(v["timestamp"].as_str().unwrap());
    }

    /// `ts` is RFC 3339 UTC to the microsecond, and about now.
    fn assert_now(ts: &str) {
        assert!(ts.len() == 27 && ts.ends_with('Z'), "{ts:?}");
        let parsed: jiff::Timestamp = ts.parse().unwrap();
        let age = jiff::Timestamp::now().duration_since(parsed);
        assert!(age.as_secs().abs() < 60, "{ts}");
    }

    proptest::proptest! {
        #[test]
        fn rounded_milliseconds_read_as_ryu_writes_them(
            f in proptest::prop_oneof![0.0..10.0f64, 0.0..1e6f64, 0.0..2e12f64, -5.0..0.0f64],
        ) {
            let mut fast = String::new();
            write_rounded(&mut fast, f).unwrap();
            let mut buf = ryu::Buffer::new();
            proptest::prop_assert_eq!(fast.as_str(), buf.format_finite(rounded(f)));
        }
    }

    #[test]
    fn rounded_milliseconds_at_the_edges() {
        for f in [
            0.0, 0.0004, 0.0005, 0.001, 0.0015, 0.01, 0.1, 0.999_5, 1.0, 2.5, 10.05, 999.999_4,
            -0.0, -0.000_4, -6.8e-6,
        ] {
            let mut fast = String::new();
            write_rounded(&mut fast, f).unwrap();
            let mut buf = ryu::Buffer::new();
            assert_eq!(fast, buf.format_finite(rounded(f)), "{f}");
            if f.abs() < 0.0005 {
                assert_eq!(fast, "0.0", "{f}: a duration never reads -0.0");
            }
        }
    }

    #[test]
    fn a_line_formatted_while_the_threads_buffer_is_in_use_gets_its_own() {
        // tracing itself drops an event dispatched from inside another's; the buffer is held
        // here instead, as a re-entry would hold it, and the line must still come out whole.
        for format in [LineFormat::text(false), LineFormat::json()] {
            let out = LINE.with_borrow_mut(|held| {
                held.push_str("held");
                capture(format, || tracing::info!(target: "outer", v = 7u8, "outer"))
            });
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 1, "{out}");
            assert!(
                lines[0].contains("outer") && !lines[0].contains("held"),
                "{out}"
            );
        }
        assert_eq!(
            LINE.with_borrow(String::clone),
            "heldheld",
            "the held buffer untouched"
        );
    }

    #[test]
    fn levels_keep_five_columns() {
        for (level, text) in [
            (Level::ERROR, " ERROR "),
            (Level::WARN, "  WARN "),
            (Level::INFO, "  INFO "),
            (Level::DEBUG, " DEBUG "),
            (Level::TRACE, " TRACE "),
        ] {
            assert_eq!(level_text(&level, false), text);
            assert!(level_text(&level, true).contains(level.as_str()));
        }
    }
}
