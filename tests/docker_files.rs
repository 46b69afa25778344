//! The deployment files (no Docker engine or Kubernetes cluster runs here): the compose file
//! parses and has the services the deployment needs, two edinode services with different actor
//! sets that share no volume and keep blobs in S3 (MinIO), and the configuration it mounts is
//! accepted by `edinode check-config`; the Kubernetes manifests in docker/k8s/ pass a schema
//! check of the fields they use (`kubectl apply --dry-run=client` needs a cluster's API) and
//! reference each other consistently.

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
    for actors in ["http_receiver,mime_unwrapper,mdn_sender,deliverer,as2_sender,outbound_intake,mdn_monitor", "decryptor,verifier,mime_unwrapper"] {
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

/// Writable mounts of a compose service: named volumes and bind mounts not marked `:ro`.
fn writable_mounts(service: &serde_yaml::Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in service["volumes"].as_sequence().into_iter().flatten() {
        let (source, read_only) = match v {
            serde_yaml::Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                (parts[0].to_string(), parts.get(2).is_some_and(|m| m.split(',').any(|o| o == "ro")))
            }
            m => (m["source"].as_str().unwrap_or_default().to_string(), m["read_only"].as_bool().unwrap_or(false)),
        };
        if !read_only {
            out.push(source);
        }
    }
    out
}

#[test]
fn compose_services_share_no_volume_and_keep_blobs_in_s3() {
    let text = std::fs::read_to_string(docker().join("compose.yml")).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    // `<<: *anchor` as compose reads it.
    doc.apply_merge().unwrap();
    let services = doc["services"].as_mapping().unwrap();
    let edinode: Vec<(&str, &serde_yaml::Value)> =
        services.iter().filter_map(|(k, v)| k.as_str().filter(|k| k.starts_with("edinode")).map(|k| (k, v))).collect();
    assert!(edinode.len() >= 2);
    let mut owner: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for (name, svc) in &edinode {
        let mounts = writable_mounts(svc);
        let replicas = svc["deploy"]["replicas"].as_u64().unwrap_or(1);
        assert!(replicas == 1 || mounts.is_empty(), "{name} has {replicas} replicas sharing {mounts:?}");
        for m in mounts {
            if let Some(other) = owner.insert(m.clone(), name) {
                panic!("volume {m} is shared by {other} and {name}");
            }
        }
        // Every edinode service reads the blob bucket's keys from its environment.
        assert!(svc["environment"]["EDINODE__BLOBS__SECRET_KEY"].as_str().is_some(), "{name}");
    }
    // Blobs go to the MinIO service, in a bucket created before edinode starts.
    let (settings, _) = edinode::config::load(Some(&docker().join("edinode.toml"))).unwrap();
    assert_eq!(settings.blobs.backend, edinode::storage::blobs::BlobBackend::S3);
    let host = settings.blobs.endpoint.trim_start_matches("http://").split(':').next().unwrap().to_string();
    assert!(services.contains_key(serde_yaml::Value::from(host.as_str())), "blob endpoint {host} is a compose service");
    assert!(doc["services"][host.as_str()]["image"].as_str().unwrap().starts_with("minio/"));
    assert!(text.contains(&format!("local/{}", settings.blobs.bucket)), "the bucket is created");
    // Redis persists (AOF): queued AS4 messages and duplicate detection survive a restart.
    let redis_cmd: Vec<&str> = doc["services"]["redis"]["command"].as_sequence().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(redis_cmd.windows(2).any(|w| w == ["--appendonly", "yes"]), "{redis_cmd:?}");
}

/// Every document of every manifest in docker/k8s/.
fn k8s_documents() -> Vec<(String, serde_yaml::Value)> {
    use serde::Deserialize;
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(docker().join("k8s")).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml")) {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            if !v.is_null() {
                out.push((path.file_name().unwrap().to_string_lossy().into_owned(), v));
            }
        }
    }
    out
}

/// The fields the manifests use, with their types (a schema check of what we wrote).
fn check_schema(file: &str, d: &serde_yaml::Value) {
    let kind = d["kind"].as_str().unwrap_or_else(|| panic!("{file}: kind"));
    let expected_api = match kind {
        "Deployment" => "apps/v1",
        "Service" | "ConfigMap" | "Secret" => "v1",
        k => panic!("{file}: unexpected kind {k}"),
    };
    assert_eq!(d["apiVersion"].as_str(), Some(expected_api), "{file}: {kind} apiVersion");
    let name = d["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{file}: metadata.name"));
    assert!(name.len() <= 63 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{file}: name {name} is not a DNS label");
    match kind {
        "Deployment" => {
            assert!(d["spec"]["replicas"].as_u64().is_some(), "{file}: replicas");
            let selector = d["spec"]["selector"]["matchLabels"].as_mapping().unwrap();
            let labels = d["spec"]["template"]["metadata"]["labels"].as_mapping().unwrap();
            for (k, v) in selector {
                assert_eq!(labels.get(k), Some(v), "{file}: selector {k:?} matches the pod labels");
            }
            let containers = d["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
            for c in containers {
                assert!(c["name"].as_str().is_some() && c["image"].as_str().is_some(), "{file}: container name and image");
                assert!(c["args"].as_sequence().unwrap().iter().all(|a| a.as_str().is_some()), "{file}: args are strings");
                let ports: Vec<&str> = c["ports"].as_sequence().unwrap().iter().map(|p| {
                    assert!(p["containerPort"].as_u64().is_some_and(|n| n > 0 && n < 65536), "{file}: containerPort");
                    p["name"].as_str().unwrap()
                }).collect();
                for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
                    let get = &c[probe]["httpGet"];
                    assert_eq!(get["path"].as_str(), Some(path), "{file}: {probe}");
                    assert!(get["port"].as_str().is_some_and(|p| ports.contains(&p)), "{file}: {probe} port names a container port");
                }
                for e in c["env"].as_sequence().into_iter().flatten() {
                    assert!(e["name"].as_str().is_some() && (e["value"].as_str().is_some() || e["valueFrom"].as_mapping().is_some()), "{file}: env entry {e:?}");
                }
                for m in c["volumeMounts"].as_sequence().unwrap() {
                    assert!(m["name"].as_str().is_some() && m["mountPath"].as_str().is_some_and(|p| p.starts_with('/')), "{file}: volumeMount");
                }
            }
        }
        "Service" => {
            assert!(d["spec"]["selector"].as_mapping().is_some(), "{file}: selector");
            for p in d["spec"]["ports"].as_sequence().unwrap() {
                assert!(p["port"].as_u64().is_some() && (p["targetPort"].as_str().is_some() || p["targetPort"].as_u64().is_some()), "{file}: service port");
            }
        }
        "ConfigMap" => assert!(d["data"].as_mapping().unwrap().values().all(|v| v.as_str().is_some()), "{file}: data values are strings"),
        "Secret" => assert!(d["stringData"].as_mapping().unwrap().values().all(|v| v.as_str().is_some()), "{file}: stringData values are strings"),
        _ => unreachable!(),
    }
}

#[test]
fn kubernetes_manifests_are_consistent_and_share_no_volume() {
    let docs = k8s_documents();
    for (file, d) in &docs {
        check_schema(file, d);
    }
    let of = |kind: &'static str| docs.iter().filter(move |(_, d)| d["kind"].as_str() == Some(kind)).map(|(_, d)| d);
    let deployments: Vec<_> = of("Deployment").collect();
    assert!(deployments.len() >= 2, "a Deployment per actor set");
    let config = of("ConfigMap").next().expect("a ConfigMap");
    let secret = of("Secret").next().expect("a Secret");
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    let secret_keys = secret["stringData"].as_mapping().unwrap();
    let toml = config["data"]["edinode.toml"].as_str().expect("edinode.toml in the ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("edinode.toml");
    std::fs::write(&cfg, toml).unwrap();
    let (settings, _) = edinode::config::load(Some(&cfg)).unwrap();
    assert_eq!(settings.blobs.backend, edinode::storage::blobs::BlobBackend::S3);

    let mut actor_sets = Vec::new();
    for d in &deployments {
        let name = d["metadata"]["name"].as_str().unwrap();
        let pod = &d["spec"]["template"]["spec"];
        // Only pod-local or read-only volumes: nothing a second pod could share.
        for v in pod["volumes"].as_sequence().unwrap() {
            let m = v.as_mapping().unwrap();
            assert!(
                ["emptyDir", "configMap", "secret"].iter().any(|k| m.contains_key(serde_yaml::Value::from(*k))),
                "{name}: volume {v:?} could be shared between pods"
            );
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert_eq!(cm, config["metadata"]["name"].as_str().unwrap(), "{name}: ConfigMap reference");
            }
        }
        let c = &pod["containers"][0];
        for e in c["env"].as_sequence().unwrap() {
            if let Some(r) = e["valueFrom"]["secretKeyRef"].as_mapping() {
                assert_eq!(r.get("name").and_then(|v| v.as_str()), Some(secret_name), "{name}: Secret reference");
                let key = r.get("key").unwrap();
                assert!(secret_keys.contains_key(key), "{name}: Secret key {key:?}");
            }
        }
        let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().filter_map(|a| a.as_str()).collect();
        let i = args.iter().position(|a| *a == "--actors").expect("--actors");
        actor_sets.push(args[i + 1].to_string());
        // The mounted config with this actor set passes check-config (S3 and Redis addresses
        // are the cluster's and do not resolve here: reported, not refused).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edinode"))
            .arg("--config")
            .arg(&cfg)
            .arg("check-config")
            .env("EDINODE__NODE__ACTORS", args[i + 1])
            .env("EDINODE__BLOBS__ACCESS_KEY", "ak")
            .env("EDINODE__BLOBS__SECRET_KEY", "sk")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("blobs: S3 bucket"));
    }
    assert!(actor_sets.iter().any(|a| a.contains("http_receiver")) && actor_sets.iter().any(|a| a.contains("decryptor") && !a.contains("http_receiver")), "{actor_sets:?}");
    // Each Service selects a Deployment's pods and targets a port they declare.
    for s in of("Service") {
        let selector = s["spec"]["selector"].as_mapping().unwrap();
        let target = deployments
            .iter()
            .find(|d| selector.iter().all(|(k, v)| d["spec"]["template"]["metadata"]["labels"].get(k) == Some(v)))
            .unwrap_or_else(|| panic!("Service {:?} selects no Deployment", s["metadata"]["name"]));
        let ports: Vec<&str> = target["spec"]["template"]["spec"]["containers"][0]["ports"].as_sequence().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
        for p in s["spec"]["ports"].as_sequence().unwrap() {
            assert!(p["targetPort"].as_str().is_some_and(|t| ports.contains(&t)), "Service port {p:?}");
        }
    }
}
