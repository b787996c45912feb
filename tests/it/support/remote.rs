//! Remote backends for the tests: the S3 (SeaweedFS) and Azure (Azurite)
//! emulators that `.ci/run` starts through `scripts/test-servers.sh`,
//! found through `STRONGROOM_TEST_*` variables. A backend whose variables
//! are unset is skipped, and the test says so.

use std::sync::atomic::{AtomicU64, Ordering};

use super::TestRepo;

/// One object-store backend the tests can put repositories on.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Short name for messages: `local`, `s3`, `azure`.
    pub name: &'static str,
    /// URL of the bucket or container (`s3://bucket`); empty for `local`.
    pub base: String,
    /// Environment the binary needs to reach it.
    pub env: Vec<(String, String)>,
}

impl Backend {
    /// SeaweedFS's S3 gateway, when `STRONGROOM_TEST_S3_URL` is set.
    pub fn s3() -> Option<Backend> {
        let base = std::env::var("STRONGROOM_TEST_S3_URL").ok()?;
        let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_string());
        Some(Backend {
            name: "s3",
            base,
            env: vec![
                ("STRONGROOM_S3_ENDPOINT".into(), var("STRONGROOM_TEST_S3_ENDPOINT", "http://127.0.0.1:8333")),
                ("AWS_ACCESS_KEY_ID".into(), var("STRONGROOM_TEST_S3_ACCESS_KEY", "strongroomtest")),
                ("AWS_SECRET_ACCESS_KEY".into(), var("STRONGROOM_TEST_S3_SECRET_KEY", "strongroomtestsecret")),
                ("AWS_REGION".into(), "us-east-1".into()),
            ],
        })
    }

    /// Azurite, when `STRONGROOM_TEST_AZ_URL` is set.
    pub fn azure() -> Option<Backend> {
        let base = std::env::var("STRONGROOM_TEST_AZ_URL").ok()?;
        Some(Backend { name: "azure", base, env: vec![("AZURE_STORAGE_USE_EMULATOR".into(), "true".into())] })
    }

    /// The local directory backend (always there).
    pub fn local() -> Backend {
        Backend { name: "local", base: String::new(), env: Vec::new() }
    }

    /// The local backend and every remote one whose emulator is up; prints
    /// which are skipped.
    pub fn all(test: &str) -> Vec<Backend> {
        let mut v = vec![Backend::local()];
        v.extend(Backend::s3_or_skip(test));
        v.extend(Backend::azure_or_skip(test));
        v
    }

    /// [`Backend::s3`], printing that `test` skips S3 when it is not up.
    pub fn s3_or_skip(test: &str) -> Option<Backend> {
        let b = Backend::s3();
        if b.is_none() {
            eprintln!("{test}: skipped on S3 (STRONGROOM_TEST_S3_URL unset; .ci/run starts SeaweedFS)");
        }
        b
    }

    /// [`Backend::azure`], printing that `test` skips Azure when it is not up.
    pub fn azure_or_skip(test: &str) -> Option<Backend> {
        let b = Backend::azure();
        if b.is_none() {
            eprintln!("{test}: skipped on Azure (STRONGROOM_TEST_AZ_URL unset; .ci/run starts Azurite)");
        }
        b
    }

    /// A repository URL under a prefix no other test or run uses.
    pub fn unique_url(&self, test: &str) -> String {
        format!("{}/{}", self.base.trim_end_matches('/'), unique_prefix(test))
    }

    /// An uninitialized test repository on this backend (a fresh prefix of
    /// the bucket, or a temp dir for `local`).
    pub fn repo(&self, test: &str) -> TestRepo {
        let mut r = TestRepo::uninitialized();
        if self.name != "local" {
            r.repo = self.unique_url(test).into();
        }
        r.env = self.env.clone();
        r
    }

    /// As [`Backend::repo`], initialized with the small chunk and pack sizes.
    pub fn small_repo(&self, test: &str) -> TestRepo {
        let r = self.repo(test);
        let mut args = vec!["init", "--kdf-memory-kib", "19456", "--kdf-passes", "2"];
        args.extend_from_slice(super::SMALL);
        r.ok(&args);
        r
    }

    /// Store settings for opening this backend in-process (object_store
    /// config keys), so tests need not touch the process environment.
    pub fn store_options(&self) -> strongroom_core::store::OpenOptions {
        let mut o = strongroom_core::store::OpenOptions::default();
        for (k, v) in &self.env {
            match k.as_str() {
                "STRONGROOM_S3_ENDPOINT" => o.s3_endpoint = Some(v.clone()),
                other => o.config.push((other.to_ascii_lowercase(), v.clone())),
            }
        }
        o
    }
}

/// `test-<pid>-<time>-<n>`: unique across tests, runs and processes.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{test}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}
