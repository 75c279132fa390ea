//! The tier that needs real services: a PostgreSQL server and an
//! S3-protocol server on 127.0.0.1, started by `.ci/run`.
//!
//! These tests are `#[ignore]`d in a plain `cargo test --workspace`, which
//! lists them as ignored. Run them with the services up:
//!
//! ```text
//! bash .ci/run                       # starts PostgreSQL and s3s-fs, runs everything, stops them
//! ZENFLOW_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:55432/postgres \
//! ZENFLOW_TEST_S3_ENDPOINT=http://127.0.0.1:8014 ZENFLOW_TEST_S3_BUCKET=zenflow-test \
//! ZENFLOW_TEST_S3_ACCESS_KEY=... ZENFLOW_TEST_S3_SECRET_KEY=... \
//!   cargo test -p zenflow-tests --test services -- --ignored
//! ```
//!
//! Without those variables an ignored test that is asked to run fails and
//! says what is missing: it never passes without having run.

use std::process::Command;
use std::sync::Arc;
use zenflow::artifact_store::StoreError;
use zenflow::conformance;
use zenflow::ext::ArtifactStore;
use zenflow::metadata::{MetadataError, MetadataStore, RunStatus};
use zenflow::stacks::config::ArtifactStoreConfig;
use zenflow::stacks::metadata::PostgresMetadataStore;
use zenflow::stacks::ObjectArtifactStore;
use zenflow_tests::services::{env, fresh_database, runtime, unique};

/// The password in `postgres://user:password@host/...` (the service tier
/// runs PostgreSQL with password authentication over TCP).
fn password_of(url: &str) -> String {
    let userinfo = url.split("://").nth(1).and_then(|r| r.split('@').next()).unwrap_or("");
    let password = userinfo.split_once(':').map(|(_, p)| p.to_string()).unwrap_or_default();
    assert!(!password.is_empty(), "ZENFLOW_TEST_POSTGRES_URL must carry a password: {}", url.replace(&password, "***"));
    password
}

fn s3_config(prefix: &str) -> ArtifactStoreConfig {
    ArtifactStoreConfig {
        url: format!("s3://{}/{prefix}", env("ZENFLOW_TEST_S3_BUCKET")),
        endpoint: Some(env("ZENFLOW_TEST_S3_ENDPOINT")),
        region: Some("us-east-1".into()),
        access_key_id: Some(env("ZENFLOW_TEST_S3_ACCESS_KEY")),
        secret_access_key: Some(env("ZENFLOW_TEST_S3_SECRET_KEY")),
        session_token: None,
        allow_http: Some(true),
        ..Default::default()
    }
}

/// A proxy in front of the S3 server that answers the first `failures`
/// requests with HTTP 503 (as S3 does when it sheds load), then forwards.
/// Returns its URL and the count of 503s it gave.
fn flaky_proxy(failures: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::atomic::Ordering;
    let target = env("ZENFLOW_TEST_S3_ENDPOINT").trim_start_matches("http://").trim_end_matches('/').to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = refused.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            if count.fetch_add(1, Ordering::SeqCst) < failures {
                // Read the whole request, then refuse it and close.
                let mut reader = BufReader::new(client.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let _ = std::io::copy(&mut reader.by_ref().take(length as u64), &mut std::io::sink());
                let mut client = client;
                let _ = client.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: 60\r\n\
                      Connection: close\r\n\r\n<Error><Code>SlowDown</Code><Message>busy</Message></Error>\n",
                );
                continue;
            }
            count.fetch_sub(1, Ordering::SeqCst);
            let Ok(server) = std::net::TcpStream::connect(&target) else { continue };
            let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
                let _ = s_write.shutdown(std::net::Shutdown::Write);
            });
            let (mut s_read, mut c_write) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
                let _ = c_write.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (url, refused)
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn transient_s3_failures_are_retried_as_the_stack_file_says() {
    use std::sync::atomic::Ordering;
    let rt = runtime();
    let payload = bytes::Bytes::from(format!("retried {}", zenflow::testing::unique_id()));
    let hash = zenflow::ContentHash::of(&payload);
    // Set in zenflow.toml, read as the CLI reads it.
    let dir = tempfile::tempdir().unwrap();
    let (url, refused) = flaky_proxy(3);
    let stack_file = |endpoint: &str, retries: u32| {
        format!(
            "[stacks.s3]\nmetadata_store = \"sqlite::memory:\"\n[stacks.s3.artifact_store]\n\
             url = \"s3://${{ZENFLOW_TEST_S3_BUCKET}}/retries\"\nendpoint = \"{endpoint}\"\n\
             access_key_id = \"${{ZENFLOW_TEST_S3_ACCESS_KEY}}\"\nsecret_access_key = \"${{ZENFLOW_TEST_S3_SECRET_KEY}}\"\n\
             allow_http = true\nretries = {retries}\nretry_backoff = \"10ms\"\nretry_timeout = \"20s\"\n"
        )
    };
    std::fs::write(dir.path().join("zenflow.toml"), stack_file(&url, 3)).unwrap();
    let stacks = zenflow::stacks::config::Stacks::load(dir.path()).unwrap();
    let config = stacks.config("s3").unwrap();
    assert_eq!(
        (config.artifact_store.retries, config.artifact_store.retry_backoff.as_deref()),
        (Some(3), Some("10ms"))
    );
    let store = ObjectArtifactStore::s3(&config.artifact_store).unwrap();
    rt.block_on(store.put(&hash, payload.clone())).expect("three 503s, three retries: stored");
    assert_eq!(refused.load(Ordering::SeqCst), 3, "every refusal was retried");
    assert_eq!(rt.block_on(zenflow::artifact_store::get_verified(&store, &hash)).unwrap(), payload);

    // One retry fewer: the fourth answer is still a 503, and the error
    // says what the server said. Nothing was stored.
    let (url, _) = flaky_proxy(3);
    std::fs::write(dir.path().join("zenflow.toml"), stack_file(&url, 2)).unwrap();
    let config = zenflow::stacks::config::Stacks::load(dir.path()).unwrap().config("s3").unwrap();
    let store = ObjectArtifactStore::s3(&config.artifact_store).unwrap();
    let other = zenflow::ContentHash::of(b"never stored: retries ran out");
    let err = rt.block_on(store.put(&other, bytes::Bytes::from_static(b"never stored: retries ran out"))).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Backend { .. }) && text.contains("503"), "{text}");
    let direct = ObjectArtifactStore::s3(&s3_config("retries")).unwrap();
    assert!(!rt.block_on(direct.exists(&other)).unwrap());

    // A setting that is not a duration names itself.
    std::fs::write(dir.path().join("zenflow.toml"), stack_file(&url, 2).replace("\"20s\"", "\"soon\"")).unwrap();
    let e = zenflow::stacks::config::Stacks::load(dir.path()).unwrap().config("s3").err().unwrap().to_string();
    assert!(e.contains("stack `s3`, artifact_store: `retry_timeout` `soon` is not a duration"), "{e}");
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn postgres_metadata_store_conforms() {
    let rt = runtime();
    let url = fresh_database(&rt);
    rt.block_on(conformance::metadata::run_all(|| -> Arc<dyn MetadataStore> {
        Arc::new(PostgresMetadataStore::open(&url, Some(4)).unwrap())
    }));
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn postgres_heartbeats_outlive_starved_steps() {
    let url = fresh_database(&runtime());
    conformance::metadata::heartbeats_outlive_starved_steps(|| -> Arc<dyn MetadataStore> {
        Arc::new(PostgresMetadataStore::open(&url, Some(4)).unwrap())
    });
}

/// The two CI roles of `ROLES_SQL`: a pull request's role records runs,
/// registers versions and moves `staging`, but the database itself refuses
/// it `production` once protected, through zenflow (even forced) and
/// through raw SQL; main's role moves it with evidence.
#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn a_pull_requests_role_cannot_move_a_protected_alias_even_with_raw_sql() {
    use zenflow::registry::{Expect, ModelRegistry, Promoted, Promotion, Protection, RegistryError};
    let rt = runtime();
    let owner_url = fresh_database(&rt);
    let owner = PostgresMetadataStore::open(&owner_url, Some(2)).unwrap();
    let (run, arts) = rt.block_on(conformance::registry::artifacts(&owner, "roles", 2));
    let password = password_of(&owner_url);
    let (pr, main) = (unique("ci_pr"), unique("ci_main"));
    let admin = |sql: String| {
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&owner_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client.batch_execute(&sql).await
        })
    };
    admin(zenflow::stacks::metadata::ROLES_SQL.to_string()).expect("the roles script applies");
    admin(zenflow::stacks::metadata::ROLES_SQL.to_string()).expect("and applies again (idempotent)");
    admin(format!(
        "CREATE ROLE {pr} LOGIN PASSWORD '{password}'; GRANT zenflow_pr TO {pr}; \
         CREATE ROLE {main} LOGIN PASSWORD '{password}'; GRANT zenflow_release TO {main};"
    ))
    .unwrap();
    let as_role = |role: &str| {
        let (scheme, rest) = owner_url.split_once("://").unwrap();
        let host = rest.split_once('@').unwrap().1;
        format!("{scheme}://{role}:{password}@{host}")
    };
    let pr_store = PostgresMetadataStore::open(&as_role(&pr), Some(2)).unwrap();
    let main_store = PostgresMetadataStore::open(&as_role(&main), Some(2)).unwrap();
    fn reg(s: &PostgresMetadataStore) -> &dyn ModelRegistry {
        s.registry().expect("PostgreSQL keeps a registry")
    }
    let promotion = |alias: &str, to: i64, expect: Expect| Promotion {
        run_id: Some(run.clone()),
        ..Promotion::new("roles-model", alias, Some(to), expect, &zenflow::registry::CiContext::unknown())
    };
    rt.block_on(async {
        // The pull request's role registers and moves an unprotected alias.
        for a in &arts {
            reg(&pr_store).register(&conformance::registry::version_of("roles-model", &run, a)).await.unwrap();
        }
        reg(&pr_store).promote(&promotion("staging", 1, Expect::Nobody)).await.unwrap();
        // It may not protect or unprotect; main's role may.
        let protect = Protection::new("roles-model", "production", true, &zenflow::registry::CiContext::unknown());
        let err = reg(&pr_store).set_protection(&protect).await.unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
        reg(&main_store).set_protection(&protect).await.unwrap().expect("protected");
        // Main's role moves production with evidence.
        let moved = reg(&main_store).promote(&promotion("production", 1, Expect::Nobody)).await.unwrap();
        assert!(matches!(moved, Promoted::Moved(_)));
        // The pull request's role: refused by zenflow without a reason, and by
        // the database with --force and a reason.
        let forced = Promotion {
            force: true,
            reason: Some("trust me".into()),
            ..promotion("production", 2, Expect::Version(1))
        };
        let err = reg(&pr_store).promote(&forced).await.unwrap_err();
        assert!(matches!(err, RegistryError::Store(_)), "{err}");
        assert!(err.to_string().contains("is protected: role") && err.to_string().contains("zenflow_pr"), "{err}");
        assert_eq!(reg(&owner).resolve("roles-model", "production").await.unwrap().map(|v| v.version), Some(1));
    });
    // Raw SQL with the pull request's credentials changes nothing either.
    let raw = |sql: &str| {
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&as_role(&pr), tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(sql)
                .await
                .map_err(|e| e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().into()))
        })
    };
    for sql in [
        "UPDATE model_aliases SET version = 2 WHERE model = 'roles-model' AND alias = 'production'",
        "DELETE FROM model_aliases WHERE model = 'roles-model' AND alias = 'production'",
        "DELETE FROM model_protections",
    ] {
        let err = raw(sql).expect_err(sql);
        assert!(err.contains("protected") || err.contains("permission denied"), "{sql}: {err}");
    }
    raw("UPDATE model_aliases SET version = 2 WHERE model = 'roles-model' AND alias = 'staging'")
        .expect("staging moves");
    let holder = rt.block_on(reg(&owner).resolve("roles-model", "production")).unwrap().map(|v| v.version);
    assert_eq!(holder, Some(1), "production never moved");
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn postgres_store_is_a_conforming_model_registry() {
    let rt = runtime();
    let url = fresh_database(&rt);
    rt.block_on(conformance::registry::run_all(|| -> Arc<dyn MetadataStore> {
        Arc::new(PostgresMetadataStore::open(&url, Some(4)).unwrap())
    }));
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn postgres_migrates_once_under_concurrent_first_use_and_refuses_foreign_or_newer_databases() {
    let rt = runtime();
    let url = fresh_database(&rt);
    // Eight processes' worth of stores meet an empty database at once.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                // A pool of one: migrating must not need a second connection.
                let store = PostgresMetadataStore::open(&url, Some(1)).unwrap();
                rt.block_on(async {
                    store.create_run(&conformance::metadata::new_run("migrate", &format!("m{i}"))).await?;
                    // The runtime stops next: commit now, not at the end of the window.
                    store.flush().await
                })
                .unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a first use failed");
    }
    let store = PostgresMetadataStore::open(&url, None).unwrap();
    assert_eq!(rt.block_on(store.list_runs(Some("migrate"), 100)).unwrap().len(), 8);
    let versions: Vec<i64> = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.query("SELECT version FROM zenflow_schema", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
    });
    assert_eq!(versions, vec![zenflow::stacks::metadata::migrations::latest()], "one schema version row");

    // A schema newer than this build: refused, and left as it was.
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute("UPDATE zenflow_schema SET version = 99").await.unwrap();
    });
    let err = rt.block_on(PostgresMetadataStore::open(&url, None).unwrap().list_runs(None, 1)).unwrap_err();
    conformance::metadata::assert_newer_schema(&err, 99);
    let still: Vec<i64> = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.query("SELECT version FROM zenflow_schema", &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
    });
    assert_eq!(still, vec![99], "the newer database was left unchanged");

    // Another application's database.
    let other = fresh_database(&rt);
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&other, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute("CREATE TABLE invoices (id INT)").await.unwrap();
    });
    let err = rt.block_on(PostgresMetadataStore::open(&other, None).unwrap().list_runs(None, 1)).unwrap_err();
    conformance::metadata::assert_not_zenflow(&err, "invoices");
    let tables: Vec<String> = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&other, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .query("SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public'", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    assert_eq!(tables, vec!["invoices".to_string()], "the other database was left unchanged");
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn an_unreachable_or_refusing_database_is_a_clear_error() {
    let rt = runtime();
    // Nothing listens: waited for, as a restarting server is, for the window.
    let store = PostgresMetadataStore::open("postgres://zen:hunter2@127.0.0.1:1/zenflow", None)
        .unwrap()
        .with_retry_window(std::time::Duration::from_millis(300));
    let err = rt.block_on(store.list_runs(None, 1)).unwrap_err().to_string();
    assert!(err.contains("postgres://zen:***@127.0.0.1:1/zenflow") && err.contains("cannot connect"), "{err}");
    assert!(err.contains("the database did not come back within 300ms ("), "{err}");
    assert!(!err.contains("hunter2"), "the password never appears: {err}");
    // What no wait mends fails at once, with the default window of 30 s.
    let admin = env("ZENFLOW_TEST_POSTGRES_URL");
    let missing = format!("{}/no_such_database", admin.rsplit_once('/').unwrap().0);
    let err = rt.block_on(PostgresMetadataStore::open(&missing, None).unwrap().list_runs(None, 1)).unwrap_err();
    assert!(err.to_string().contains("no_such_database"), "{err}");
    assert!(!err.to_string().contains("did not come back"), "not retried: {err}");
    // Wrong credentials: the server's refusal, never the password.
    let password = password_of(&admin);
    let wrong = admin.replacen(&format!(":{password}@"), ":not-the-password@", 1);
    let err =
        rt.block_on(PostgresMetadataStore::open(&wrong, None).unwrap().list_runs(None, 1)).unwrap_err().to_string();
    assert!(err.contains("password authentication failed") && !err.contains("did not come back"), "{err}");
    assert!(!err.contains("not-the-password") && !err.contains(&password), "{err}");
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn s3_artifact_store_conforms() {
    let rt = runtime();
    let store: Arc<dyn ArtifactStore> = Arc::new(ObjectArtifactStore::s3(&s3_config(&unique("conformance"))).unwrap());
    rt.block_on(conformance::artifact_store::run_all(store.clone()));
    // Above the multipart threshold: uploaded in parts, visible when complete.
    rt.block_on(conformance::artifact_store::large_object(store.as_ref(), 200 << 20));
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn wrong_s3_credentials_are_a_clear_error() {
    let rt = runtime();
    let hash = zenflow::ContentHash::of(b"probe");
    let mut bad = s3_config("creds");
    bad.secret_access_key = Some("not-the-secret".into());
    let store = ObjectArtifactStore::s3(&bad).unwrap();
    let err = rt.block_on(store.put(&hash, bytes::Bytes::from_static(b"probe"))).unwrap_err();
    match &err {
        StoreError::AccessDenied { bucket, code, .. } => {
            assert_eq!(bucket, &env("ZENFLOW_TEST_S3_BUCKET"));
            assert_eq!(code, "SignatureDoesNotMatch", "the server's own code: {err}");
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    let err = err.to_string();
    assert!(err.contains("check the access key and secret") && err.contains("s3:ListBucket"), "{err}");
    assert!(!err.contains("not-the-secret"), "the secret never appears: {err}");
    // Reads and writes after the check are refused the same way.
    let err = rt.block_on(store.get(&hash)).unwrap_err();
    assert!(matches!(err, StoreError::AccessDenied { .. }), "{err:?}");
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn a_missing_bucket_is_a_clear_error_and_is_not_created() {
    let rt = runtime();
    let mut missing = s3_config("x");
    missing.url = "s3://no-such-bucket-zf/x".into();
    let store = ObjectArtifactStore::s3(&missing).unwrap();
    let hash = zenflow::ContentHash::of(b"probe");
    let err = rt.block_on(store.put(&hash, bytes::Bytes::from_static(b"probe"))).unwrap_err();
    assert!(matches!(&err, StoreError::NoSuchBucket { bucket, .. } if bucket == "no-such-bucket-zf"), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("the bucket `no-such-bucket-zf` does not exist"), "{err}");
    let stream = futures_stream(b"probe");
    let err = rt.block_on(store.put_stream(&hash, 5, stream)).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    // Nothing was written: the bucket still does not exist.
    let again = ObjectArtifactStore::s3(&missing).unwrap();
    assert!(rt.block_on(again.put(&hash, bytes::Bytes::from_static(b"probe"))).is_err());
}

fn futures_stream(bytes: &'static [u8]) -> zenflow::artifact_store::ByteStream {
    Box::pin(futures::stream::once(async move { Ok(bytes::Bytes::from_static(bytes)) }))
}

/// A project whose stack `shared` is a fresh PostgreSQL database and a
/// fresh prefix of the S3 bucket, named in `zenflow.toml` through
/// environment variables (as a CI job's secrets are), driving the demo
/// pipeline.
struct SharedProject {
    dir: tempfile::TempDir,
    db: String,
    prefix: String,
}

impl SharedProject {
    fn new(rt: &tokio::runtime::Runtime) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let prefix = unique("e2e");
        std::fs::write(
            dir.path().join("zenflow.toml"),
            format!(
                "[stacks.shared]\nmetadata_store = \"${{ZF_DB}}\"\n\n[stacks.shared.artifact_store]\n\
                 url = \"s3://{bucket}/{prefix}\"\nendpoint = \"${{ZF_S3}}\"\nregion = \"us-east-1\"\n\
                 access_key_id = \"${{ZF_KEY}}\"\nsecret_access_key = \"${{ZF_SECRET}}\"\nallow_http = true\n",
                bucket = env("ZENFLOW_TEST_S3_BUCKET"),
            ),
        )
        .unwrap();
        SharedProject { dir, db: fresh_database(rt), prefix }
    }

    /// The demo pipeline with `args`, in the project, with the stack's variables set.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_demo_pipeline"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("ZENFLOW_PROJECT_ROOT", self.dir.path())
            .env_remove("ZENFLOW_STACK")
            .env("ZF_DB", &self.db)
            .env("ZF_S3", env("ZENFLOW_TEST_S3_ENDPOINT"))
            .env("ZF_KEY", env("ZENFLOW_TEST_S3_ACCESS_KEY"))
            .env("ZF_SECRET", env("ZENFLOW_TEST_S3_SECRET_KEY"));
        c
    }

    /// `cmd(args)` run to its end, which must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    /// The stack's artifact store, as a test reads it.
    fn artifacts(&self) -> ObjectArtifactStore {
        ObjectArtifactStore::s3(&s3_config(&self.prefix)).unwrap()
    }
}

/// `gc` deleting old runs over and over beside a pipeline on PostgreSQL +
/// S3 costs no run and loses no artifact; once settled, the bucket holds
/// exactly the objects the remaining artifact versions have, and `runs
/// delete` of the last run empties it after the grace period.
#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn gc_beside_pipelines_on_postgres_and_s3_loses_nothing() {
    let rt = runtime();
    let p = SharedProject::new(&rt);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (runs, trashed) = std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let (mut runs, mut trashed) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let out = p.ok(&["gc", "--stack", "shared", "--keep-last", "1", "--grace", "1s", "--json"]);
                let report: serde_json::Value = serde_json::from_str(&out).unwrap();
                runs += report["runs"].as_array().map_or(0, Vec::len);
                trashed += report["objects"]["trashed"]["count"].as_u64().unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            (runs, trashed)
        });
        for i in 0..12 {
            let size = format!("size={}", [5000, 6000, 7000][i % 3]);
            let mut args = vec!["run", "-q", "--stack", "shared", "--set", &size];
            if i % 4 == 3 {
                args.push("--no-cache");
            }
            p.ok(&args);
            p.ok(&["artifacts", "cat", "--stack", "shared", "--raw", "demo.generate.output@latest"]);
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        collector.join().unwrap()
    });
    assert!(runs > 5 && trashed > 0, "gc deleted while the pipeline ran: {runs} runs, {trashed} objects");
    let store = PostgresMetadataStore::open(&p.db, None).unwrap();
    let remaining = rt.block_on(store.list_runs(Some("demo"), 100)).unwrap();
    assert!(remaining.iter().all(|r| r.status == RunStatus::Completed), "{remaining:?}");

    let settle = || {
        for _ in 0..2 {
            std::thread::sleep(std::time::Duration::from_millis(1100));
            p.ok(&["gc", "--stack", "shared", "--grace", "1s"]);
        }
    };
    settle();
    let in_use = rt.block_on(store.content_hashes()).unwrap();
    let objects = rt.block_on(p.artifacts().list(zenflow::artifact_store::Shelf::Live)).unwrap();
    assert!(!objects.is_empty() && objects.iter().all(|o| in_use.contains_key(&o.hash)), "only used objects stay");
    for o in &objects {
        rt.block_on(zenflow::artifact_store::get_verified(&p.artifacts(), &o.hash)).expect("whole");
    }
    assert!(rt.block_on(p.artifacts().list(zenflow::artifact_store::Shelf::Trash)).unwrap().is_empty());
    let again = p.ok(&["run", "--stack", "shared", "--set", "size=7000"]);
    assert!(again.contains("(0 executed, 3 cached, 0 failed, 0 skipped)"), "{again}");

    let latest: Vec<String> =
        rt.block_on(store.list_runs(Some("demo"), 100)).unwrap().into_iter().map(|r| r.id).collect();
    let mut args = vec!["runs", "delete", "--stack", "shared"];
    args.extend(latest.iter().map(String::as_str));
    p.ok(&args);
    settle();
    assert!(rt.block_on(p.artifacts().list(zenflow::artifact_store::Shelf::Live)).unwrap().is_empty(), "all gone");
    assert!(rt.block_on(store.list_runs(None, 10)).unwrap().is_empty());
}

/// The demo pipeline binary on a stack of PostgreSQL + S3, three processes at once.
#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn pipelines_run_on_a_postgres_and_s3_stack_from_several_processes_at_once() {
    let rt = runtime();
    let shared = SharedProject::new(&rt);
    let (db, project) = (&shared.db, &shared.dir);
    let cmd = |args: &[&str]| shared.cmd(args);
    // The database password must never be printed.
    let password = password_of(db);
    let check = cmd(&["stacks", "check", "shared"]).output().unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out}{}", String::from_utf8_lossy(&check.stderr));
    assert!(!out.contains(&password) && out.contains("postgres:***@"), "{out}");
    assert!(out.contains("metadata store") && out.contains("artifact store") && !out.contains("FAILED"), "{out}");
    let show = String::from_utf8_lossy(&cmd(&["stacks", "show", "shared"]).output().unwrap().stdout).into_owned();
    assert!(show.contains("secret access key") && show.contains("***"), "{show}");
    assert!(!show.contains(&env("ZENFLOW_TEST_S3_SECRET_KEY")), "credentials are redacted: {show}");
    assert!(!show.contains(&password) && show.contains("postgres:***@"), "{show}");
    let list = String::from_utf8_lossy(&cmd(&["stacks", "list"]).output().unwrap().stdout).into_owned();
    assert!(!list.contains(&password), "{list}");

    // 5000 f64 are ~45 KB: the generated values go to S3, the small outputs
    // stay inline in PostgreSQL.
    let children: Vec<_> = (0..3)
        .map(|i| {
            cmd(&[
                "run",
                "-q",
                "--stack",
                "shared",
                "--set",
                &format!("size={}", 5000 + i % 2),
                "--json",
                &format!("r{i}.json"),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a concurrent run failed");
    }
    let store = PostgresMetadataStore::open(db, None).unwrap();
    let runs = rt.block_on(store.list_runs(Some("demo"), 100)).unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r.status == RunStatus::Completed && r.stack == "shared"), "{runs:?}");
    for run in &runs {
        assert_eq!(rt.block_on(store.step_runs(&run.id)).unwrap().len(), 3, "every step run of {} recorded", run.name);
    }
    // Version numbers per artifact name stay unique and dense across processes.
    for name in ["demo.generate.output", "demo.score.output", "demo.publish.output"] {
        let mut numbers: Vec<i64> =
            rt.block_on(store.artifact_versions(Some(name), 100)).unwrap().iter().map(|v| v.version).collect();
        numbers.sort_unstable();
        let expected: Vec<i64> = (1..=numbers.len() as i64).collect();
        assert_eq!(numbers, expected, "versions of {name}");
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path().join("r0.json")).unwrap()).unwrap();
    assert!(r["steps"][0]["outputs"][0]["uri"].as_str().unwrap().starts_with("s3://"), "{r}");
    assert!(r["steps"][2]["outputs"][0]["uri"].as_str().unwrap().starts_with("inline:"), "{r}");

    // Unchanged: the next run is served from the shared cache.
    let out = cmd(&["run", "--stack", "shared", "--set", "size=5000", "--json", "again.json"]).output().unwrap();
    assert!(out.status.success());
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path().join("again.json")).unwrap()).unwrap();
    assert!(again["steps"].as_array().unwrap().iter().all(|s| s["status"] == "cached"), "{again}");

    // A missing credential variable is a usage error naming it and the stack.
    let out = cmd(&["run", "--stack", "shared"]).env_remove("ZF_SECRET").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stack `shared`: environment variable `ZF_SECRET` is not set"), "{err}");
}

/// A fresh database owned by the TLS-only role (`.ci/run` serves TLS with a
/// certificate for `localhost` signed by a CA of its own); returns a
/// function of the host and the query that makes its URL.
fn tls_database(rt: &tokio::runtime::Runtime) -> impl Fn(&str, &str) -> String {
    let name = unique("zftls");
    rt.block_on(async {
        let admin = env("ZENFLOW_TEST_POSTGRES_URL");
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await.expect("connect as admin");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {name} OWNER tls_only")).await.expect("create database");
    });
    let role = env("ZENFLOW_TEST_POSTGRES_TLS_URL");
    let base = role.rsplit_once('/').map_or(role.as_str(), |(b, _)| b).to_string();
    move |host: &str, query: &str| {
        let url = format!("{}/{name}", base.replace("@localhost:", &format!("@{host}:")));
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn postgres_over_tls_checks_the_server_as_sslmode_asks() {
    let rt = runtime();
    let tls_url = tls_database(&rt);
    let ca = env("ZENFLOW_TEST_POSTGRES_CA");
    let connects = |url: &str| -> Result<(), MetadataError> {
        let store = PostgresMetadataStore::open(url, Some(1))?;
        rt.block_on(store.list_runs(None, 1)).map(|_| ())
    };
    // The role may only connect over TLS, so each success is a TLS session.
    connects(&tls_url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"))).unwrap();
    connects(&tls_url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"))).unwrap();
    connects(&tls_url("127.0.0.1", "sslmode=require")).unwrap();
    connects(&tls_url("127.0.0.1", "")).unwrap(); // libpq's default, prefer
    let password = password_of(&env("ZENFLOW_TEST_POSTGRES_TLS_URL"));
    let refused = |url: &str| {
        let err = connects(url).unwrap_err().to_string();
        assert!(!err.contains(&password), "the password leaked: {}", err.replace(&password, "***"));
        assert!(!err.contains("did not come back"), "a refusal is not waited out: {err}");
        err
    };
    // The certificate names localhost, not 127.0.0.1.
    let err = refused(&tls_url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}")));
    assert!(err.contains("does not name the host") && err.contains("verify-ca"), "{err}");
    // A certificate from another CA is refused, whichever mode checks it.
    let other_ca = env("ZENFLOW_TEST_POSTGRES_OTHER_CA");
    for mode in ["verify-ca", "verify-full", "require"] {
        let err = refused(&tls_url("localhost", &format!("sslmode={mode}&sslrootcert={other_ca}")));
        assert!(err.contains("certificate") && err.contains("sslrootcert=/path/to/ca.pem"), "{mode}: {err}");
    }
    // Not signed by a public CA: the system roots refuse it.
    let err = refused(&tls_url("localhost", "sslmode=verify-full&sslrootcert=system"));
    assert!(err.contains("certificate"), "{err}");
    // Verifying with no CA at all is refused before connecting (it trusted
    // every public CA, for any host name, before), naming the fix.
    let err = refused(&tls_url("localhost", "sslmode=verify-ca"));
    assert!(err.contains("sslrootcert=/path/to/ca.pem") && err.contains("root.crt"), "{err}");
    let err = refused(&tls_url("127.0.0.1", "sslmode=verify-ca&sslrootcert=system"));
    assert!(err.contains("needs sslmode=verify-full"), "{err}");
    // Without TLS the server turns the role away.
    let err = refused(&tls_url("localhost", "sslmode=disable"));
    assert!(err.contains("no encryption") || err.contains("pg_hba.conf"), "{err}");
    // A CA file that is not there: said before anything connects.
    let err =
        PostgresMetadataStore::open(&tls_url("localhost", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"), None)
            .unwrap_err()
            .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn postgres_metadata_store_conforms_over_verified_tls() {
    let rt = runtime();
    let url =
        tls_database(&rt)("localhost", &format!("sslmode=verify-full&sslrootcert={}", env("ZENFLOW_TEST_POSTGRES_CA")));
    rt.block_on(conformance::metadata::run_all(|| -> Arc<dyn MetadataStore> {
        Arc::new(PostgresMetadataStore::open(&url, Some(4)).unwrap())
    }));
}

/// Two writers (each its own store handle and connections, as two
/// processes have) run the same fan-out pipeline at once, over and over,
/// with the cache off: their batches take the same version locks in every
/// order, and nothing is lost, nothing deadlocks, every number is unique.
#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn two_writers_run_the_same_pipeline_at_once_on_postgres() {
    use zenflow::conformance::orchestrator::{conformance_pipeline, Shape};
    use zenflow::stacks::LocalOrchestrator;
    use zenflow::{Pipeline, RunOptions};
    let rt = runtime();
    let url = fresh_database(&rt);
    let runs_each = 6;
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let stack = zenflow::Stack::new(
                    "shared",
                    Arc::new(LocalOrchestrator::new(4)),
                    Arc::new(ObjectArtifactStore::memory()),
                    Arc::new(PostgresMetadataStore::open(&url, Some(4)).unwrap()),
                );
                for _ in 0..runs_each {
                    let shape = Shape { width: 12, fail_on: -1 };
                    conformance_pipeline
                        .run_with(&stack, &shape, RunOptions { no_cache: true, ..Default::default() })
                        .expect("a run completes");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("a writer failed");
    }
    let store = PostgresMetadataStore::open(&url, None).unwrap();
    let runs = rt.block_on(store.list_runs(Some("zf_conformance"), 100)).unwrap();
    assert_eq!(runs.len(), 2 * runs_each);
    let steps_per_run = 2 + 3 * 12 + 1;
    for run in &runs {
        assert_eq!(run.status, RunStatus::Completed, "{run:?}");
        assert_eq!(rt.block_on(store.step_runs(&run.id)).unwrap().len(), steps_per_run);
    }
    let versions = rt.block_on(store.artifact_versions(None, 100_000)).unwrap();
    assert_eq!(versions.len(), 2 * runs_each * steps_per_run, "one version per step run");
    let mut by_name: std::collections::BTreeMap<&str, Vec<i64>> = Default::default();
    for v in &versions {
        by_name.entry(&v.name).or_default().push(v.version);
    }
    for (name, mut numbers) in by_name {
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=2 * runs_each as i64).collect::<Vec<_>>(), "versions of {name}");
    }
}

/// A batch whose connection dies before it commits loses the writes that
/// were already reported done: the run they belong to is then refused
/// further writes (naming why), closing it records it and the lost step as
/// failed, and other runs go on, on a new connection.
#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn a_lost_postgres_batch_fails_the_run_it_belonged_to() {
    use zenflow::conformance::metadata::{new_run, step_write};
    use zenflow::metadata::StepStatus;
    let rt = runtime();
    let url = fresh_database(&rt);
    // A long window: the batch stays open until the connection is cut; and
    // no retry window: nothing waits for the connection to come back.
    let store = PostgresMetadataStore::open(&url, Some(2))
        .unwrap()
        .with_commit_window(std::time::Duration::from_secs(60))
        .with_retry_window(std::time::Duration::ZERO);
    rt.block_on(async {
        let run = store.create_run(&new_run("lost", "lost-run")).await.unwrap();
        store.flush().await.unwrap();
        // Reported done, not yet committed; the cached one is not even answered yet.
        store.write_step_run(&step_write(&run.id, "good", StepStatus::Completed)).await.unwrap();
        store.write_step_run(&step_write(&run.id, "skipped", StepStatus::Skipped)).await.unwrap();
        terminate_sessions(&url).await;
        // The next write of the run finds the batch gone.
        let err = loop {
            match store.write_step_run(&step_write(&run.id, "later", StepStatus::Completed)).await {
                Err(e) => break e,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        };
        assert!(matches!(err, MetadataError::Backend { .. }), "{err:?}");
        let err = store.set_run_status(&run.id, RunStatus::Completed, None, Some(zenflow::testing::now())).await;
        let err = err.unwrap_err().to_string();
        assert!(err.contains("were lost"), "{err}");
        let record = store.get_run(&run.id).await.unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Failed, "{record:?}");
        let steps = store.step_runs(&run.id).await.unwrap();
        assert!(steps.iter().any(|s| s.invocation == "good" && s.status == StepStatus::Failed), "{steps:?}");
        // Another run, on a new connection, is not affected.
        let other = store.create_run(&new_run("lost", "other-run")).await.unwrap();
        store.write_step_run(&step_write(&other.id, "fine", StepStatus::Completed)).await.unwrap();
        store.set_run_status(&other.id, RunStatus::Completed, None, Some(zenflow::testing::now())).await.unwrap();
        assert_eq!(store.step_runs(&other.id).await.unwrap().len(), 1);
    });
}

/// The server ends every session of the database at `url` (as a failover
/// or an administrator does).
async fn terminate_sessions(url: &str) {
    let db = url.rsplit('/').next().unwrap().to_string();
    let (admin, conn) =
        tokio_postgres::connect(&env("ZENFLOW_TEST_POSTGRES_URL"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", &[&db]).await.unwrap();
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn a_batch_whose_session_was_ended_is_replayed_and_nothing_is_lost() {
    use zenflow::conformance::metadata::{artifact, new_run, step_write};
    use zenflow::metadata::StepStatus;
    let rt = runtime();
    let url = fresh_database(&rt);
    let store =
        PostgresMetadataStore::open(&url, Some(2)).unwrap().with_commit_window(std::time::Duration::from_secs(60));
    rt.block_on(async {
        // Created, and written, in the batch the server is about to end.
        let run = store.create_run(&new_run("ended", "ended-run")).await.unwrap();
        let mut first = step_write(&run.id, "first", StepStatus::Completed);
        first.new_outputs.push(artifact("ended", "first", b"1"));
        let linked = store.write_step_run(&first).await.unwrap();
        store.write_step_run(&step_write(&run.id, "skipped", StepStatus::Skipped)).await.unwrap();
        terminate_sessions(&url).await;
        let mut later = step_write(&run.id, "later", StepStatus::Completed);
        later.new_outputs.push(artifact("ended", "first", b"2"));
        let later = store.write_step_run(&later).await.unwrap();
        assert_eq!(later[0].artifact.version, 2, "numbered after the replayed version");
        store.set_run_status(&run.id, RunStatus::Completed, None, Some(zenflow::testing::now())).await.unwrap();

        let other = PostgresMetadataStore::open(&url, None).unwrap();
        let record = other.get_run(&run.id).await.unwrap().expect("the run's creation was replayed");
        assert_eq!(record.status, RunStatus::Completed);
        let steps: Vec<_> = other.step_runs(&run.id).await.unwrap().iter().map(|s| s.status).collect();
        assert_eq!(steps, vec![StepStatus::Completed, StepStatus::Skipped, StepStatus::Completed]);
        let kept = other.artifact_version(&linked[0].artifact.id).await.unwrap().expect("kept");
        assert_eq!(kept.version, 1);
    });
}

/// The registry races of `tests/registry_race.rs`, on PostgreSQL: two
/// processes of eight threads each.
#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn two_processes_race_on_a_postgres_registry() {
    let rt = runtime();
    let url = fresh_database(&rt);
    let store = PostgresMetadataStore::open(&url, Some(2)).unwrap();
    drop(zenflow_tests::registry_race::seed(&store, 16));
    drop(store);
    zenflow_tests::registry_race::races_hold(env!("CARGO_BIN_EXE_registry_race"), &url, || {
        Arc::new(PostgresMetadataStore::open(&url, Some(2)).unwrap())
    });
}

/// Hosts whose clocks disagree share one PostgreSQL store: heartbeats are
/// recorded and judged by the database's clock, so a host an hour behind
/// keeps its run alive, and the run is taken for dead only when the
/// database has seen no heartbeat for the whole window.
#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn heartbeats_are_judged_by_the_databases_clock_not_the_hosts() {
    use zenflow::conformance::metadata::new_run;
    let rt = runtime();
    let store = PostgresMetadataStore::open(&fresh_database(&rt), None).unwrap();
    let hour = 3_600_000_000i64;
    // Started on a host whose clock is an hour behind the database's.
    let mut behind = new_run("skew", "skewed-host");
    behind.started_at = zenflow::testing::now() - hour;
    rt.block_on(store.create_run(&behind)).unwrap();
    rt.block_on(store.set_run_status(&behind.id, RunStatus::Running, None, None)).unwrap();
    rt.block_on(store.heartbeat(&behind.id, zenflow::testing::now() - hour)).unwrap();
    rt.block_on(store.flush()).unwrap();
    let window = std::time::Duration::from_secs(180);
    assert_eq!(rt.block_on(store.fail_stale_runs(window)).unwrap(), Vec::<String>::new(), "a live run is not failed");
    assert_eq!(rt.block_on(store.get_run(&behind.id)).unwrap().unwrap().status, RunStatus::Running);
    // By the database's clock it beat just now: stale only after a second
    // of a one-second window has passed with no heartbeat.
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let marked = rt.block_on(store.fail_stale_runs(std::time::Duration::from_secs(1))).unwrap();
    assert_eq!(marked, vec![behind.id.clone()]);
}

#[test]
#[ignore = "needs PostgreSQL and an S3 server on 127.0.0.1: run `bash .ci/run`"]
fn reading_an_empty_postgres_database_creates_nothing() {
    let rt = runtime();
    let db = fresh_database(&rt);
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("zenflow.toml"),
        "[stacks.pg]\nmetadata_store = \"${ZF_DB}\"\nartifact_store = \"file://artifacts\"\n",
    )
    .unwrap();
    let cmd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_demo_pipeline"))
            .args(args)
            .current_dir(project.path())
            .env("ZENFLOW_PROJECT_ROOT", project.path())
            .env("ZF_DB", &db)
            .output()
            .unwrap()
    };
    let out = cmd(&["runs", "list", "--stack", "pg"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no runs yet here\n", "{}", String::from_utf8_lossy(&out.stderr));
    let tables = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let rows = client
            .query("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'", &[])
            .await
            .unwrap();
        rows[0].get::<_, i64>(0)
    });
    assert_eq!(tables, 0, "a read created the schema");
    assert!(!project.path().join("artifacts").exists(), "a read created the artifact folder");
    // A write creates it; then reads list what it wrote.
    assert!(cmd(&["run", "-q", "--stack", "pg"]).status.success());
    let listed = String::from_utf8_lossy(&cmd(&["runs", "list", "--stack", "pg"]).stdout).into_owned();
    assert!(listed.lines().nth(1).is_some_and(|l| l.contains("completed")), "{listed}");
}
