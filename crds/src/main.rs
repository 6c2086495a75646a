//! `herald-crdgen`: prints the CRDs, or with `--write` regenerates the committed copies.

use std::process::ExitCode;

/// Where the generated YAML is committed, relative to the workspace root.
const COPIES: [&str; 2] = ["crds/herald.dev.yaml", "charts/herald-operator/crds/herald.dev.yaml"];

fn main() -> ExitCode {
    let yaml = match herald_crds::crds_yaml() {
        Ok(yaml) => yaml,
        Err(err) => {
            eprintln!("herald-crdgen: cannot render the CRDs: {err}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().nth(1).as_deref() != Some("--write") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for copy in COPIES {
        let path = root.join(copy);
        if let Err(err) =
            path.parent().map(std::fs::create_dir_all).transpose().and_then(|_| std::fs::write(&path, &yaml))
        {
            eprintln!("herald-crdgen: cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {copy}");
    }
    ExitCode::SUCCESS
}
