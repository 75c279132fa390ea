//! The part of Ray's Jobs REST API (on the dashboard port) the orchestrator
//! uses: packages, submission, status, logs, stop and delete.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How a request to the Ray head went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No answer: the head is down, unreachable, or timed out. Whether the
    /// request took effect is unknown.
    #[error("the Ray head at {address} cannot be reached: {message}")]
    Unreachable {
        /// The dashboard address.
        address: String,
        /// What failed.
        message: String,
    },
    /// The job or package does not exist.
    #[error("not found")]
    NotFound,
    /// The head answered with an error status.
    #[error("the Ray head answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The answer's text (its last line, for Python tracebacks).
        message: String,
    },
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Waiting for resources.
    Pending,
    /// Its entrypoint runs.
    Running,
    /// Its entrypoint exited 0.
    Succeeded,
    /// Its entrypoint exited non-zero, or Ray could not run it.
    Failed,
    /// Stopped through the API.
    Stopped,
}

impl JobStatus {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Stopped)
    }
}

/// What `GET /api/jobs/{id}` says about a job.
#[derive(Debug, Clone, Deserialize)]
pub struct JobInfo {
    /// Its state.
    pub status: JobStatus,
    /// Ray's explanation of the state.
    #[serde(default)]
    pub message: Option<String>,
    /// Ray's classification of a failure (`JOB_ENTRYPOINT_COMMAND_ERROR`, ...).
    #[serde(default)]
    pub error_type: Option<String>,
    /// The entrypoint's exit code (128 + N after signal N: Ray runs it in a shell).
    #[serde(default)]
    pub driver_exit_code: Option<i32>,
}

/// The body of `POST /api/jobs/`.
#[derive(Debug, Clone, Serialize)]
pub struct Submission {
    /// The shell command.
    pub entrypoint: String,
    /// Our id for the job: derived from run, steps and attempt.
    pub submission_id: String,
    /// Only `working_dir`: never credentials, which any reader of the
    /// job list would see.
    pub runtime_env: BTreeMap<String, String>,
    /// Labels (string values only).
    pub metadata: BTreeMap<String, String>,
    /// CPUs reserved for the entrypoint (at least 1: with none, Ray runs it
    /// on the head).
    pub entrypoint_num_cpus: f64,
    /// GPUs reserved for the entrypoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_gpus: Option<u32>,
    /// Memory reserved for the entrypoint, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_memory: Option<u64>,
}

/// A client of one Ray head's Jobs API.
#[derive(Debug, Clone)]
pub struct JobsApi {
    http: reqwest::Client,
    address: String,
}

/// The last non-empty line of an error body: Ray answers with Python
/// tracebacks whose last line says what went wrong.
fn last_line(body: &str) -> String {
    body.lines().rev().map(str::trim).find(|l| !l.is_empty() && *l != ".").unwrap_or("").chars().take(500).collect()
}

impl JobsApi {
    /// A client of the head at `address` (`http://127.0.0.1:8265`).
    pub fn new(address: &str) -> Result<Self, String> {
        // reqwest's rustls needs the provider to build any client, plain
        // `http://` included: without it, opening a Ray stack panicked
        // unless another component (an S3 store) had installed one first.
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(JobsApi { http, address: address.trim_end_matches('/').to_string() })
    }

    /// The dashboard address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn unreachable(&self, e: &reqwest::Error) -> ApiError {
        // reqwest's Display hides the cause ("error sending request").
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        ApiError::Unreachable { address: self.address.clone(), message }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<bytes::Bytes, ApiError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ApiError::NotFound);
        }
        if !status.is_success() {
            return Err(ApiError::Refused {
                status: status.as_u16(),
                message: last_line(&String::from_utf8_lossy(&body)),
            });
        }
        Ok(body)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, body: &[u8], what: &str) -> Result<T, ApiError> {
        serde_json::from_slice(body).map_err(|e| ApiError::Refused {
            status: 200,
            message: format!("unexpected answer to {what}: {e}: {}", last_line(&String::from_utf8_lossy(body))),
        })
    }

    /// Whether package `name` (`_ray_pkg_<hash>.zip`) is on the cluster.
    pub async fn has_package(&self, name: &str) -> Result<bool, ApiError> {
        match self.send(self.http.get(format!("{}/api/packages/gcs/{name}", self.address))).await {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Uploads package `name`.
    pub async fn put_package(&self, name: &str, zip: Vec<u8>) -> Result<(), ApiError> {
        // A large binary over a slow link takes longer than a status call.
        let request = self
            .http
            .put(format!("{}/api/packages/gcs/{name}", self.address))
            .timeout(Duration::from_secs(600))
            .body(zip);
        self.send(request).await.map(drop)
    }

    /// Submits a job.
    pub async fn submit(&self, submission: &Submission) -> Result<(), ApiError> {
        let body =
            serde_json::to_vec(submission).map_err(|e| ApiError::Refused { status: 0, message: e.to_string() })?;
        let request = self
            .http
            .post(format!("{}/api/jobs/", self.address))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request).await.map(drop)
    }

    /// A job's state.
    pub async fn job(&self, id: &str) -> Result<JobInfo, ApiError> {
        let body = self.send(self.http.get(format!("{}/api/jobs/{id}", self.address))).await?;
        self.json(&body, "a job status request")
    }

    /// Every job record the head keeps, as JSON.
    pub async fn jobs(&self) -> Result<serde_json::Value, ApiError> {
        let body = self.send(self.http.get(format!("{}/api/jobs/", self.address))).await?;
        self.json(&body, "the job list")
    }

    /// A job's log.
    pub async fn logs(&self, id: &str) -> Result<String, ApiError> {
        #[derive(Deserialize)]
        struct Logs {
            logs: String,
        }
        let body = self.send(self.http.get(format!("{}/api/jobs/{id}/logs", self.address))).await?;
        Ok(self.json::<Logs>(&body, "a job log request")?.logs)
    }

    /// Stops a job.
    pub async fn stop(&self, id: &str) -> Result<(), ApiError> {
        self.send(self.http.post(format!("{}/api/jobs/{id}/stop", self.address))).await.map(drop)
    }

    /// Deletes an ended job's record.
    pub async fn delete(&self, id: &str) -> Result<(), ApiError> {
        self.send(self.http.delete(format!("{}/api/jobs/{id}", self.address))).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracebacks_are_cut_to_their_last_line() {
        let body = "Traceback (most recent call last):\n  File \"x.py\"\nValueError: Job with submission_id a already exists. Please use a different submission_id.\n.\n";
        assert_eq!(
            last_line(body),
            "ValueError: Job with submission_id a already exists. Please use a different submission_id."
        );
    }

    #[test]
    fn job_states_parse() {
        let info: JobInfo = serde_json::from_str(
            r#"{"status":"FAILED","message":"exit code 139","error_type":"JOB_ENTRYPOINT_COMMAND_ERROR","driver_exit_code":139,"extra":1}"#,
        )
        .unwrap();
        assert_eq!(info.status, JobStatus::Failed);
        assert_eq!(info.driver_exit_code, Some(139));
        assert!(JobStatus::Stopped.is_terminal() && !JobStatus::Pending.is_terminal());
    }
}
