//! Posting the report as one sticky pull-request comment.
//!
//! Reads `GITHUB_TOKEN`, `GITHUB_REPOSITORY` (`owner/repo`), the PR number
//! from the event JSON at `GITHUB_EVENT_PATH`, and `GITHUB_API_URL`
//! (default `https://api.github.com`, so tests can use a local server). The
//! comment is found again by the hidden marker the markdown report starts
//! with *and* its author, the token's own user: anyone can write the marker
//! into a comment of their own, and that one must be neither edited (it
//! would fail) nor taken for the report. The author is
//! `ZENFLOW_GITHUB_COMMENT_AUTHOR` if set, else the login `GET /user`
//! answers for the token, else `github-actions[bot]` (the Actions token may
//! not read `/user`). It is updated in place, or created when there is
//! none. The token never appears in output or errors.

use serde_json::Value;
use std::time::Duration;

/// What went wrong posting the comment. Exit code 2 (configuration) or 1 (the API failed).
#[derive(Debug)]
pub struct CommentError {
    /// Whether the environment was wrong (vs. the API failing).
    pub usage: bool,
    /// The message, with the token redacted.
    pub message: String,
}

/// What happened.
#[derive(Debug, PartialEq, Eq)]
pub enum Posted {
    /// A new comment with this id.
    Created(u64),
    /// The earlier comment with this id was updated.
    Updated(u64),
}

/// Of one page of `GET /repos/{repo}/issues/{pr}/comments` (what the API
/// answered, untrusted): the id of the comment `author` wrote whose body
/// carries `marker`, and how many comments the page had.
pub fn marked_comment(page: &Value, author: &str, marker: &str) -> Result<(Option<u64>, usize), String> {
    let list = page.as_array().ok_or("expected a JSON array of comments")?;
    let found = list
        .iter()
        .filter(|c| c["user"]["login"].as_str() == Some(author))
        .find_map(|c| c["body"].as_str().filter(|b| b.contains(marker)).and_then(|_| c["id"].as_u64()));
    Ok((found, list.len()))
}

/// The settings read from the environment.
pub struct GithubEnv {
    token: String,
    repository: String,
    api: String,
    pr: u64,
    author: Option<String>,
}

/// Who posts with the workflow's own `GITHUB_TOKEN`.
pub const ACTIONS_BOT: &str = "github-actions[bot]";

fn usage(message: impl Into<String>) -> CommentError {
    CommentError { usage: true, message: message.into() }
}

impl std::fmt::Debug for GithubEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubEnv")
            .field("token", &"***")
            .field("repository", &self.repository)
            .field("api", &self.api)
            .field("pr", &self.pr)
            .finish()
    }
}

impl GithubEnv {
    /// Reads the environment; the error names the missing variable.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, CommentError> {
        let need = |name: &str, why: &str| {
            get(name).filter(|v| !v.trim().is_empty()).ok_or_else(|| usage(format!("{name} is not set: {why}")))
        };
        let token = need("GITHUB_TOKEN", "pass the workflow's token (`GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}`)")?;
        let repository = need("GITHUB_REPOSITORY", "it is `owner/repo`, set by GitHub Actions")?;
        if repository.split('/').count() != 2 {
            return Err(usage(format!("GITHUB_REPOSITORY is `{repository}`; expected `owner/repo`")));
        }
        let event_path = need("GITHUB_EVENT_PATH", "it points at the event JSON, set by GitHub Actions")?;
        let event = std::fs::read_to_string(&event_path)
            .map_err(|e| usage(format!("cannot read the event file {event_path} (GITHUB_EVENT_PATH): {e}")))?;
        let event: Value =
            serde_json::from_str(&event).map_err(|e| usage(format!("the event file {event_path} is not JSON: {e}")))?;
        let pr = event["pull_request"]["number"]
            .as_u64()
            .or_else(|| event["issue"]["number"].as_u64().filter(|_| event["issue"]["pull_request"].is_object()))
            .or_else(|| event["number"].as_u64())
            .ok_or_else(|| {
                usage(format!(
                    "the event in {event_path} is not a pull request (no `pull_request.number`); \
                     run this step on `pull_request` events only"
                ))
            })?;
        let api =
            get("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into()).trim_end_matches('/').to_string();
        let author = get("ZENFLOW_GITHUB_COMMENT_AUTHOR").filter(|a| !a.trim().is_empty());
        Ok(GithubEnv { token, repository, api, pr, author })
    }

    /// The pull request number.
    pub fn pr(&self) -> u64 {
        self.pr
    }

    fn redact(&self, s: &str) -> String {
        if self.token.is_empty() {
            s.to_string()
        } else {
            s.replace(&self.token, "***")
        }
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .user_agent("zenflow")
            .build()
            .into()
    }

    fn fail(&self, what: &str, detail: impl std::fmt::Display) -> CommentError {
        CommentError { usage: false, message: self.redact(&format!("GitHub API: {what} failed: {detail}")) }
    }

    /// The login the token comments as.
    fn author(&self) -> Result<String, CommentError> {
        if let Some(a) = &self.author {
            return Ok(a.clone());
        }
        let url = format!("{}/user", self.api);
        let mut response = self
            .agent()
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Accept", "application/vnd.github+json")
            .call()
            .map_err(|e| self.fail("GET /user", e))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| self.fail("GET /user", e))?;
        match status {
            200 => serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|u| u["login"].as_str().map(String::from))
                .ok_or_else(|| self.fail("GET /user", "the answer has no `login`")),
            // An installation token (the workflow's GITHUB_TOKEN) cannot read /user.
            403 | 404 => Ok(ACTIONS_BOT.to_string()),
            _ => {
                let hint = if status == 401 { " (the token was refused)" } else { "" };
                let short: String = text.chars().take(300).collect();
                Err(self.fail("GET /user", format!("HTTP {status}{hint}: {short}")))
            }
        }
    }

    fn send(&self, method: &str, url: &str, body: Option<&Value>) -> Result<Value, CommentError> {
        let agent = self.agent();
        let auth = format!("Bearer {}", self.token);
        let result = match (method, body) {
            ("GET", _) => agent
                .get(url)
                .header("Authorization", &auth)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .call(),
            (m, Some(b)) => {
                let req = if m == "POST" { agent.post(url) } else { agent.patch(url) };
                req.header("Authorization", &auth)
                    .header("Accept", "application/vnd.github+json")
                    .header("X-GitHub-Api-Version", "2022-11-28")
                    .send_json(b)
            }
            (m, None) => return Err(self.fail(m, "no body")),
        };
        let what = format!("{method} {}", url.strip_prefix(&self.api).unwrap_or(url));
        let mut response = result.map_err(|e| self.fail(&what, e))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| self.fail(&what, e))?;
        if !(200..300).contains(&status) {
            let hint = match status {
                401 => " (the token was refused)",
                403 => " (the token lacks `pull-requests: write` permission)",
                404 => " (check GITHUB_REPOSITORY and the PR number)",
                _ => "",
            };
            let short: String = text.chars().take(300).collect();
            return Err(self.fail(&what, format!("HTTP {status}{hint}: {short}")));
        }
        serde_json::from_str(&text).map_err(|e| self.fail(&what, format!("the answer is not JSON: {e}")))
    }

    /// Creates the comment, or updates the earlier one this token's user
    /// wrote carrying `marker`.
    pub fn upsert_comment(&self, marker: &str, body: &str) -> Result<Posted, CommentError> {
        let base = format!("{}/repos/{}", self.api, self.repository);
        let author = self.author()?;
        let mut existing = None;
        for page in 1..=50 {
            let url = format!("{base}/issues/{}/comments?per_page=100&page={page}", self.pr);
            let comments = self.send("GET", &url, None)?;
            let (found, len) =
                marked_comment(&comments, &author, marker).map_err(|e| self.fail("listing comments", e))?;
            existing = found;
            if existing.is_some() || len < 100 {
                break;
            }
        }
        let payload = serde_json::json!({ "body": body });
        match existing {
            Some(id) => {
                self.send("PATCH", &format!("{base}/issues/comments/{id}"), Some(&payload))?;
                Ok(Posted::Updated(id))
            }
            None => {
                let created = self.send("POST", &format!("{base}/issues/{}/comments", self.pr), Some(&payload))?;
                Ok(Posted::Created(created["id"].as_u64().unwrap_or(0)))
            }
        }
    }
}

/// `report github-comment`: posts (or updates) the run report as one
/// sticky pull-request comment.
pub(super) fn comment<P: zenflow_core::Pipeline>(pipeline: &P, path: &std::path::Path) -> super::CliResult {
    let body = std::fs::read_to_string(path)
        .map_err(|e| super::CliError::usage(format!("cannot read the report {}: {e}", path.display())))?;
    let marker = body
        .lines()
        .next()
        .filter(|l| l.starts_with("<!-- zenflow-report"))
        .map(str::to_string)
        .unwrap_or_else(|| crate::report::marker(pipeline.name()));
    let body = if body.contains(&marker) { body } else { format!("{marker}\n{body}") };
    let body = crate::report::fit_comment(&body, crate::report::GITHUB_COMMENT_LIMIT);
    let env = GithubEnv::from_env(|k| std::env::var(k).ok()).map_err(|e| super::CliError::usage(e.message))?;
    match env.upsert_comment(&marker, &body) {
        Ok(Posted::Created(id)) => outln!("created comment {id} on pull request #{}", env.pr()),
        Ok(Posted::Updated(id)) => outln!("updated comment {id} on pull request #{}", env.pr()),
        Err(e) => {
            return Err(super::CliError {
                code: if e.usage { super::exit::USAGE } else { super::exit::STEP_FAILED },
                message: e.message,
            })
        }
    }
    Ok(super::exit::SUCCESS)
}
