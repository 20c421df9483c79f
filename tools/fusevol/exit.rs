//! How a command fails: the [`Failure`] type, its exit code and its report.

use std::process::ExitCode;

use serde_json::json;

use fusevol::control::client::error_code_name;
use fusevol::control::{ClientError, ErrorBody};

/// Why a command did not succeed. Every failure ends up in [`exit_code`] and [`report`].
pub(crate) enum Failure {
    /// The daemon answered with an error.
    Daemon(ErrorBody),
    /// `check` found problems; the report has been printed already.
    Unclean { problems: usize },
    /// Bad or missing arguments.
    Usage(String),
    /// The daemon could not be reached or did not answer sensibly.
    Unreachable(ClientError),
    /// An offline command (`init`, `check`) failed.
    Local(String),
    /// `pair wait` gave up: the pair did not reach the state in time.
    WaitTimeout(String),
    /// The pair is PSUE while waiting for another state.
    PairSuspended(String),
    /// `--wait`: the pair was split or deleted meanwhile and will not reach PAIR.
    PairChanged(String),
    /// `group wait`: the group is in state error; its goal cannot come without an operator.
    GroupError(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Daemon(body) => Failure::Daemon(body),
            other => Failure::Unreachable(other),
        }
    }
}

/// The one place that maps outcomes to exit codes (documented in `--help`).
pub(crate) fn exit_code(outcome: &Result<(), Failure>) -> ExitCode {
    ExitCode::from(match outcome {
        Ok(()) => 0,
        Err(
            Failure::Daemon(_)
            | Failure::Unclean { .. }
            | Failure::PairChanged(_)
            | Failure::GroupError(_),
        ) => 1,
        Err(Failure::Usage(_)) => 2,
        Err(Failure::Unreachable(_)) => 3,
        Err(Failure::Local(_)) => 4,
        Err(Failure::WaitTimeout(_)) => 5,
        Err(Failure::PairSuspended(_)) => 6,
    })
}

/// Tell the user (or the script) what failed.
pub(crate) fn report(failure: &Failure, json_mode: bool) {
    let (code, message) = match failure {
        Failure::Daemon(body) => (error_code_name(body.code), body.message.clone()),
        Failure::Unclean { problems } => {
            // The report itself is the output; in JSON mode it was printed already.
            if !json_mode {
                eprintln!("error: pool check found {problems} problem(s)");
            }
            return;
        }
        Failure::Usage(msg) => ("usage", msg.clone()),
        Failure::Unreachable(e) => (e.code(), e.to_string()),
        Failure::Local(msg) => ("local", msg.clone()),
        Failure::WaitTimeout(msg) => ("wait_timeout", msg.clone()),
        Failure::PairSuspended(msg) => ("pair_suspended", msg.clone()),
        Failure::PairChanged(msg) => ("pair_changed", msg.clone()),
        Failure::GroupError(msg) => ("group_error", msg.clone()),
    };
    if json_mode {
        println!(
            "{}",
            json!({ "error": { "code": code, "message": message } })
        );
    } else {
        eprintln!("error: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let code = |r: Result<(), Failure>| format!("{:?}", exit_code(&r));
        let body = ErrorBody {
            code: fusevol::control::ErrorCode::NotFound,
            message: "x".into(),
        };
        assert_eq!(code(Ok(())), format!("{:?}", ExitCode::from(0)));
        assert_eq!(
            code(Err(Failure::Daemon(body))),
            format!("{:?}", ExitCode::from(1))
        );
        assert_eq!(
            code(Err(Failure::Unclean { problems: 2 })),
            format!("{:?}", ExitCode::from(1))
        );
        assert_eq!(
            code(Err(Failure::Usage("u".into()))),
            format!("{:?}", ExitCode::from(2))
        );
        let unreachable = ClientError::NoDaemon { pool: "/p".into() };
        assert_eq!(
            code(Err(Failure::Unreachable(unreachable))),
            format!("{:?}", ExitCode::from(3))
        );
        assert_eq!(
            code(Err(Failure::Local("l".into()))),
            format!("{:?}", ExitCode::from(4))
        );
        assert_eq!(
            code(Err(Failure::PairChanged("c".into()))),
            format!("{:?}", ExitCode::from(1))
        );
        assert_eq!(
            code(Err(Failure::WaitTimeout("t".into()))),
            format!("{:?}", ExitCode::from(5))
        );
        assert_eq!(
            code(Err(Failure::PairSuspended("s".into()))),
            format!("{:?}", ExitCode::from(6))
        );
    }
}
