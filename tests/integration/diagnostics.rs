//! Snapshot tests of diagnostics: each fixture in tests/fixtures/invalid renders exactly as the CLI
//! prints it, and names the codes it is meant to show.

use crate::common;

use lifeboat::diagnostics::Code;

#[test]
fn invalid_fixtures_render_as_snapshotted() {
    let root = common::root();
    std::env::set_current_dir(&root).unwrap();
    let files = common::yaml_files(&root.join("tests/fixtures/invalid"));
    assert!(files.len() >= 15);
    for f in files {
        let out = common::rendered(&f);
        assert_ne!(out, "(valid)", "{} should be invalid", f.display());
        for line in out.lines().filter(|l| l.contains(": error[")) {
            // file:line:col: error[LBxxxx]: message
            let mut parts = line.splitn(4, ':');
            let (file, l, c) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            assert!(file.ends_with(".yaml"), "{line}");
            assert!(
                l.parse::<usize>().unwrap() >= 1 && c.parse::<usize>().unwrap() >= 1,
                "{line}"
            );
        }
        let name = f.file_stem().unwrap().to_str().unwrap().to_string();
        insta::assert_snapshot!(name, out);
    }
}

#[test]
fn every_code_has_a_docs_page_and_every_page_a_code() {
    let dir = common::root().join("docs/errors");
    for code in Code::ALL {
        let page = code.docs();
        assert!(
            page.starts_with(&format!("# {} ", code.as_str())),
            "docs/errors/{code}.md must start with `# {code} `"
        );
        assert!(
            page.contains("```yaml"),
            "docs/errors/{code}.md needs an example"
        );
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name == "README.md" {
            continue;
        }
        let code = name.trim_end_matches(".md");
        assert!(
            Code::ALL.iter().any(|c| c.as_str() == code),
            "docs/errors/{name} documents no code"
        );
    }
}

#[test]
fn params_from_the_command_line_are_checked() {
    let root = common::root();
    let loaded = lifeboat::runbook::load_file(&root.join("runbooks/region-failover.yaml"));
    let rb = loaded.result.unwrap();
    let given = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    let errs = lifeboat::runbook::params::resolve(
        &rb,
        &given(&[
            ("replica", "3"),
            ("replicas", "three"),
            ("dr_region", "us-west-2"),
        ]),
        true,
    )
    .unwrap_err();
    let codes: Vec<Code> = errs.iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        vec![
            Code::UnknownParam,
            Code::BadParamValue,
            Code::BadParamValue,
            Code::MissingParam
        ]
    );
    assert_eq!(errs[0].help.as_deref(), Some("did you mean `replicas`?"));
    let ok = lifeboat::runbook::params::resolve(
        &rb,
        &given(&[("dr_address", "192.0.2.1"), ("replicas", "5")]),
        true,
    )
    .unwrap();
    assert_eq!(ok["replicas"], serde_json::json!(5));
    assert_eq!(ok["dr_region"], serde_json::json!("eu-west-1"));
}
