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
