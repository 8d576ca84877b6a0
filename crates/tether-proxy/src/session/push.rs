//! The push API (SPEC 7): lines appended to a session's output from
//! outside, and the worker side ended, through the admin listener.

use bytes::Bytes;
use tether_wire::SessionId;
use tokio::sync::oneshot;

use super::registry::Registry;
use super::task::{Command, PushRefused};

/// What a push came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    Appended,
    /// Unknown, ended, or its worker side is over: `404`.
    NotFound,
    /// A line over the session's `max_line`: `400`.
    LineTooLong,
    /// Over `detached_backlog`: `503` with `Retry-After`.
    Full,
}

/// Splits a body into lines (a final line without LF gets one).
fn lines_of(body: &Bytes) -> Vec<Bytes> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < body.len() {
        match body[start..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                lines.push(body.slice(start..start + i + 1));
                start += i + 1;
            }
            None => {
                let mut last = body[start..].to_vec();
                last.push(b'\n');
                lines.push(Bytes::from(last));
                start = body.len();
            }
        }
    }
    lines
}

/// Session `raw_id`, waited for while it is on its way here (upgrade).
pub(crate) async fn find(registry: &Registry, raw_id: &str) -> Option<super::SessionHandle> {
    let id = SessionId::parse(raw_id.as_bytes()).ok()?;
    registry.find_any_or_wait(&id).await
}

/// Appends the lines of `body` to session `raw_id`'s output.
pub(crate) async fn push(registry: &Registry, raw_id: &str, body: Bytes) -> PushOutcome {
    let Some(handle) = find(registry, raw_id).await else {
        return PushOutcome::NotFound;
    };
    let lines = lines_of(&body);
    if lines.iter().any(|l| l.len() > handle.max_line) {
        return PushOutcome::LineTooLong;
    }
    let (reply, answer) = oneshot::channel();
    if handle.mailbox.send(Command::Push { lines, reply }).is_err() {
        return PushOutcome::NotFound;
    }
    match answer.await {
        Ok(Ok(())) => PushOutcome::Appended,
        Ok(Err(PushRefused::Full)) => PushOutcome::Full,
        Ok(Err(PushRefused::Ended)) | Err(_) => PushOutcome::NotFound,
    }
}

/// Ends the worker side of session `raw_id`; `false` when there was none.
pub(crate) async fn end(registry: &Registry, raw_id: &str) -> bool {
    let Some(handle) = find(registry, raw_id).await else {
        return false;
    };
    let (reply, answer) = oneshot::channel();
    if handle.mailbox.send(Command::AdminEnd { reply }).is_err() {
        return false;
    }
    answer.await.unwrap_or(false)
}

/// This node's sessions as another instance of the cluster sees them
/// (SPEC 11): its pushes and `DELETE`s come here through the same calls
/// as the admin listener's and a local client's.
impl crate::cluster::OwnSessions for Registry {
    fn answer<'a>(
        &'a self,
        op: &'a str,
        sid: &'a str,
        payload: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send + 'a>> {
        Box::pin(async move {
            match op {
                "push" => match push(self, sid, payload).await {
                    PushOutcome::Appended => 204,
                    PushOutcome::NotFound => 404,
                    PushOutcome::LineTooLong => 400,
                    PushOutcome::Full => 503,
                },
                "admin-end" if end(self, sid).await => 204,
                "admin-end" => 404,
                _ => {
                    let hosts: Vec<&str> = std::str::from_utf8(&payload)
                        .unwrap_or_default()
                        .split('\n')
                        .collect();
                    if super::end_for_hosts(self, sid, &hosts).await {
                        204
                    } else {
                        410
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_get_their_lf() {
        let body = Bytes::from_static(b"a\nbb\nccc");
        let lines = lines_of(&body);
        assert_eq!(lines, vec![&b"a\n"[..], b"bb\n", b"ccc\n"]);
        assert!(lines_of(&Bytes::new()).is_empty());
        assert_eq!(lines_of(&Bytes::from_static(b"\n")), vec![&b"\n"[..]]);
    }
}
