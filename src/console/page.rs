//! HTML for the console: every text that is not a literal of this file goes through [`esc`]
//! (a backend name or a note holding `<script>` shows as text), the layout, and the two static
//! files (stylesheet and the script that refreshes live views), served by the binary itself:
//! the pages load nothing from anywhere else (the Content-Security-Policy says so too).

use std::borrow::Cow;
use std::fmt::Write;

/// The stylesheet, `/console/static/console.css`.
pub const CSS: &str = r#"
:root { --fg:#1b1f24; --muted:#5b6470; --line:#d6dae0; --bg:#f6f7f9; --ok:#1a7f37; --bad:#cf222e; --warn:#9a6700; --accent:#0b5cad; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; gap:1.2em; align-items:center; padding:.6em 1.2em; background:#fff; border-bottom:1px solid var(--line); }
header strong { font-size:15px; }
header nav a { margin-right:1em; color:var(--accent); text-decoration:none; }
header nav a.here { font-weight:600; color:var(--fg); }
header form { margin-left:auto; }
main { padding:1em 1.2em 3em; max-width:1400px; }
h1 { font-size:20px; margin:.2em 0 .8em; }
h2 { font-size:16px; margin:1.4em 0 .5em; }
table { border-collapse:collapse; width:100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:.35em .6em; border-bottom:1px solid var(--line); vertical-align:top; }
th { background:#eef0f3; font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size:12.5px; }
.muted { color:var(--muted); }
.ok { color:var(--ok); } .bad { color:var(--bad); } .warn { color:var(--warn); }
.card { background:#fff; border:1px solid var(--line); padding:.8em 1em; margin:.6em 0; }
.grid { display:grid; grid-template-columns:repeat(auto-fill,minmax(320px,1fr)); gap:.8em; }
form.inline { display:inline; }
form.filters { display:flex; flex-wrap:wrap; gap:.5em; align-items:end; margin:.4em 0 1em; }
form.filters label { display:flex; flex-direction:column; font-size:12px; color:var(--muted); }
input, select, button, textarea { font:inherit; padding:.3em .5em; border:1px solid var(--line); border-radius:4px; background:#fff; }
button { background:var(--accent); color:#fff; border-color:var(--accent); cursor:pointer; }
button.plain { background:#fff; color:var(--accent); }
.error { background:#fff0f0; border:1px solid #f5c2c7; padding:.6em .8em; color:var(--bad); }
.notice { background:#eef6ff; border:1px solid #b6d4fe; padding:.6em .8em; }
svg.chart { background:#fbfbfc; border:1px solid var(--line); }
.login { max-width:360px; margin:8vh auto; }
.login label { display:block; margin:.6em 0; }
.login input { width:100%; }
"#;

/// The script, `/console/static/console.js`: a view marked `data-refresh` reloads its `main`
/// every 5 s (paused while a form field has focus), and a form marked `data-confirm` asks first.
pub const JS: &str = r#"
(function () {
  var main = document.querySelector('main[data-refresh]');
  if (main) {
    setInterval(function () {
      var a = document.activeElement;
      if (a && (a.tagName === 'INPUT' || a.tagName === 'SELECT' || a.tagName === 'TEXTAREA')) return;
      fetch(location.href, { credentials: 'same-origin', headers: { 'X-Console-Fragment': '1' } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) return;
          var doc = new DOMParser().parseFromString(html, 'text/html');
          var fresh = doc.querySelector('main');
          if (fresh) main.innerHTML = fresh.innerHTML;
        })
        .catch(function () {});
    }, 5000);
  }
  document.addEventListener('submit', function (e) {
    var msg = e.target.getAttribute('data-confirm');
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
})();
"#;

/// `s` as HTML text or an attribute value.
pub fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A query-string value, percent-encoded.
pub fn url(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The console's sections, in the navigation's order: (path, title).
pub const SECTIONS: &[(&str, &str)] = &[
    ("/console/", "Overview"),
    ("/console/bookings", "Bookings"),
    ("/console/reconcile", "Reconcile"),
    ("/console/config", "Configuration"),
    ("/console/audit", "Audit"),
];

/// Who is looking, for the header.
pub struct Viewer<'a> {
    pub login: &'a str,
    pub role: &'a str,
    pub csrf: &'a str,
}

/// A whole page: the header (navigation, who, sign-out) and `body` in `main` (`refresh`: the
/// script reloads it every 5 s).
pub fn layout(title: &str, here: &str, who: Option<&Viewer>, refresh: bool, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · mis-gateway</title>\
         <link rel=\"stylesheet\" href=\"/console/static/console.css\">\
         <script src=\"/console/static/console.js\" defer></script></head><body><header>\
         <strong>mis-gateway</strong>",
        esc(title)
    );
    if let Some(v) = who {
        out.push_str("<nav>");
        for (path, name) in SECTIONS {
            let class = if *path == here { " class=\"here\"" } else { "" };
            let _ = write!(out, "<a href=\"{path}\"{class}>{name}</a>");
        }
        let _ = write!(
            out,
            "</nav><form method=\"post\" action=\"/console/logout\" class=\"inline\">\
             <span class=\"muted\">{} ({})</span> \
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button class=\"plain\" type=\"submit\">Sign out</button></form>",
            esc(v.login),
            esc(v.role),
            esc(v.csrf)
        );
    }
    let refresh = if refresh { " data-refresh" } else { "" };
    let _ = write!(out, "</header><main{refresh}>{body}</main></body></html>");
    out
}

/// A small SVG chart of `values` (one per minute, oldest first) as bars, `label` its title.
pub fn bars(values: &[f64], label: &str, unit: &str) -> String {
    let (w, h) = (300.0, 60.0);
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let n = values.len().max(1) as f64;
    let bw = w / n;
    let mut out = String::new();
    let last = values.last().copied().unwrap_or(0.0);
    let _ = write!(
        out,
        "<figure><figcaption class=\"muted\">{} — now {} {}, max {} {}</figcaption>\
         <svg class=\"chart\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">",
        esc(label),
        fmt_num(last),
        esc(unit),
        fmt_num(max),
        esc(unit),
        esc(label)
    );
    for (i, v) in values.iter().enumerate() {
        let bh = if max > 0.0 { v / max * (h - 4.0) } else { 0.0 };
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#0b5cad\"><title>{}</title></rect>",
            i as f64 * bw + 0.5,
            h - bh,
            (bw - 1.0).max(0.5),
            bh,
            fmt_num(*v)
        );
    }
    out.push_str("</svg></figure>");
    out
}

pub fn fmt_num(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e12 {
        format!("{}", v as i64)
    } else if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_shown_as_text() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert!(matches!(esc("plain text"), Cow::Borrowed(_)));
        let page = layout(
            "<b>t</b>",
            "/console/",
            Some(&Viewer {
                login: "<img>",
                role: "viewer",
                csrf: "c\"sr",
            }),
            false,
            "",
        );
        assert!(!page.contains("<b>t</b>") && !page.contains("<img>"));
        assert!(page.contains("c&quot;sr"));
        let chart = bars(&[1.0, 2.0], "<x>", "/min");
        assert!(!chart.contains("<x>"));
    }
}
