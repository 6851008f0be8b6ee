//! The README's error table is the code's error table.

use mis_gateway::error::TABLE;

#[test]
fn the_readme_error_table_matches_the_code() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<(u16, String, String, String, String)> = readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            let status = cells.first()?.parse().ok()?;
            let code = cells.get(1)?.trim_matches('`').to_owned();
            Some((
                status,
                code,
                cells.get(2)?.to_string(),
                cells.get(3)?.to_string(),
                cells.get(4)?.to_string(),
            ))
        })
        .collect();
    let expected: Vec<(u16, String, String, String, String)> = TABLE
        .iter()
        .map(|(name, k)| {
            (
                k.status.as_u16(),
                k.code.to_owned(),
                name.to_string(),
                k.message.to_owned(),
                k.retry.text().to_owned(),
            )
        })
        .collect();
    assert_eq!(rows, expected);
}

/// ARCHITECTURE.md's code map names every room and every module in it, so a new file cannot
/// land without its line in the map.
#[test]
fn the_architecture_code_map_names_every_module() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let map = architecture
        .split("## Code map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("ARCHITECTURE.md has a code map section");
    let mut missing = Vec::new();
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !map.contains(&format!("`{name}/`")) {
                    missing.push(format!("{name}/"));
                }
                stack.push(path);
            } else if !matches!(name.as_str(), "mod" | "main" | "lib") {
                let named = map.contains(&format!("`{name}`"))
                    || map.contains(&format!("`{name}.rs`"))
                    || map.contains(&format!("`{name}/`"));
                if !named {
                    missing.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "not in ARCHITECTURE.md's code map: {missing:?}"
    );
}
