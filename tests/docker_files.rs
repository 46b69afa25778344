//! The deployment files (no Docker engine runs here): the compose file parses and has the
//! services the deployment needs, two edinode services with different actor sets, and the
//! configuration it mounts is accepted by `edinode check-config`.

use std::path::Path;

fn docker() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

#[test]
fn compose_file_parses_and_describes_the_deployment() {
    let text = std::fs::read_to_string(docker().join("compose.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let services = doc["services"].as_mapping().unwrap();
    for s in ["rabbitmq", "redis", "s3", "otel-collector", "jaeger", "edinode-front", "edinode-worker"] {
        assert!(services.contains_key(serde_yaml::Value::from(s)), "service {s}");
    }
    let actors = |svc: &str| -> String {
        let cmd = doc["services"][svc]["command"].as_sequence().unwrap();
        let i = cmd.iter().position(|v| v.as_str() == Some("--actors")).unwrap();
        cmd[i + 1].as_str().unwrap().to_string()
    };
    let (front, worker) = (actors("edinode-front"), actors("edinode-worker"));
    assert_ne!(front, worker);
    assert!(front.contains("http_receiver") && worker.contains("decryptor"));
    // Every edinode service mounts the same config and exports traces to the collector.
    for svc in ["edinode-front", "edinode-worker"] {
        assert_eq!(doc["services"][svc]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str(), Some("http://otel-collector:4318"));
    }
    assert!(text.contains("./edinode.toml:/etc/edinode/edinode.toml"));
    // The collector config parses and forwards traces.
    let otel: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(docker().join("otel-collector.yaml")).unwrap()).unwrap();
    assert!(otel["service"]["pipelines"]["traces"]["receivers"].as_sequence().unwrap().iter().any(|r| r.as_str() == Some("otlp")));
    // The Dockerfile builds the binary the compose file runs.
    let df = std::fs::read_to_string(docker().join("Dockerfile")).unwrap();
    assert!(df.contains("cargo build --release --bin edinode") && df.contains("ENTRYPOINT [\"edinode\"]"));
}

#[test]
fn the_mounted_config_is_accepted_by_check_config() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edinode")).arg("--config").arg(docker().join("edinode.toml")).arg("check-config").output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // And the actor sets of both services are valid.
    for actors in ["http_receiver,mime_unwrapper,mdn_sender,deliverer,as2_sender,outbound_intake,mdn_monitor", "decryptor,verifier"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edinode"))
            .arg("--config")
            .arg(docker().join("edinode.toml"))
            .arg("check-config")
            .env("EDINODE__NODE__ACTORS", actors)
            .output()
            .unwrap();
        assert!(out.status.success(), "{actors}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edinode")).arg("--config").arg(docker().join("edinode.toml")).arg("check-config").env("EDINODE__NODE__ACTORS", "decryptor,nonsense").output().unwrap();
    assert!(!out.status.success());
}
