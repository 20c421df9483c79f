//! `fusevol events`, and the event stream that `pair wait` and `group wait` wait on.

use std::time::{Duration, Instant};

use serde_json::Value;

use fusevol::control::{Client, ClientError, ErrorBody, ErrorCode, Event, EventsHeader, Request};

use crate::exit::Failure;
use crate::Ctx;

/// One line of an events stream.
pub(crate) enum Line {
    Event(Box<Event>),
    /// The stream ended normally (`backlog` sent, or the daemon stops).
    End(String),
}

/// An open events stream on its own connection.
pub(crate) struct Stream {
    client: Client,
    pub(crate) header: EventsHeader,
}

impl Stream {
    /// Open a stream. `from_now`: no backlog, only what happens from here on.
    pub(crate) fn open(
        ctx: &Ctx,
        since: Option<u64>,
        follow: bool,
        from_now: bool,
    ) -> Result<Stream, Failure> {
        let mut client = ctx.client()?;
        let (header, _) = client.call_ok::<EventsHeader>(&Request::Events {
            since,
            follow,
            from_now,
        })?;
        Ok(Stream { client, header })
    }

    /// The next line; `Ok(None)` when `limit` passed first (`None`: wait forever). An
    /// observer cut off for falling behind is a `Daemon` failure (code busy) with the
    /// daemon's message.
    pub(crate) fn next(&mut self, limit: Option<Instant>) -> Result<Option<Line>, Failure> {
        let timeout = match limit {
            None => Duration::ZERO,
            Some(t) => {
                let left = t.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                left
            }
        };
        self.client.set_timeout(timeout);
        let resp = match self.client.next_response() {
            Ok(r) => r,
            Err(ClientError::Timeout { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !resp.ok {
            return Err(Failure::Daemon(resp.error.unwrap_or(ErrorBody {
                code: ErrorCode::Io,
                message: "the events stream failed without saying why".into(),
            })));
        }
        let data = resp.data.unwrap_or(Value::Null);
        if data.get("seq").is_some() {
            let ev: Event = serde_json::from_value(data).map_err(|e| {
                Failure::Local(format!("the daemon sent an event of an unknown shape: {e}"))
            })?;
            return Ok(Some(Line::Event(Box::new(ev))));
        }
        let end = data
            .get("end")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        Ok(Some(Line::End(end)))
    }
}

/// `fusevol events [--follow] [--since SEQ]`: the ring (after SEQ), then live events.
pub(crate) fn events(ctx: &Ctx, since: Option<u64>, follow: bool) -> Result<(), Failure> {
    let mut stream = Stream::open(ctx, since, follow, false)?;
    if let Some((first, last)) = stream.header.dropped {
        eprintln!(
            "warning: events {first}..{last} were dropped from the ring (it keeps the last {}); continuing at {}",
            stream.header.capacity,
            last + 1
        );
    }
    loop {
        match stream.next(None)? {
            Some(Line::Event(ev)) => show(ctx, &ev),
            Some(Line::End(why)) => {
                if why == "daemon-stopping" {
                    eprintln!("note: the daemon is stopping; the stream ends here");
                }
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

fn show(ctx: &Ctx, ev: &Event) {
    if ctx.json {
        println!("{}", serde_json::to_string(ev).unwrap_or_default());
    } else {
        println!("{}", text(ev));
    }
    // A follower piped into another program sees each event at once.
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// `12 2026-12-03T09:20:01.123Z pair data state from=COPY state=PAIR svol=copy`
fn text(ev: &Event) -> String {
    let mut s = format!(
        "{} {} {} {} {}",
        ev.seq, ev.time, ev.object, ev.name, ev.change
    );
    for (k, v) in &ev.detail {
        match v {
            Value::String(t) => s.push_str(&format!(" {k}={t}")),
            other => s.push_str(&format!(" {k}={other}")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_line_has_seq_and_details() {
        let ev: Event = serde_json::from_value(serde_json::json!({
            "seq": 7, "time": "t", "object": "pair", "name": "db", "change": "state",
            "detail": {"state": "PSUE", "reason": "no space"}
        }))
        .unwrap();
        assert_eq!(text(&ev), "7 t pair db state reason=no space state=PSUE");
    }
}
