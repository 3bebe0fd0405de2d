//! Writes the API's OpenAPI document to stdout, exactly as `GET /api/v1/openapi.json` serves
//! it. `cargo xtask openapi` runs this to refresh the committed copy, `docs/openapi.json`.

use std::io::Write;

fn main() -> std::io::Result<()> {
    std::io::stdout().write_all(quantumflow_api::openapi::json().as_bytes())
}
