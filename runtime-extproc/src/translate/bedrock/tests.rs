use super::converse::{converse_response, output_content};
use super::*;
use crate::translate::TranslateError;

#[test]
fn a_converse_response_needs_output_message_content() {
    for body in [
        &b"not json"[..],
        br#"{"output": {}}"#,
        br#"{"output": {"message": {"content": "text"}}}"#,
    ] {
        assert!(
            matches!(converse_response(body), Err(TranslateError::Upstream(_))),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(matches!(
            chat::chat_response(body, "m", None),
            Err(TranslateError::Upstream(_))
        ));
    }
    let response = converse_response(br#"{"output": {"message": {"content": [{"text": "hi"}]}}}"#)
        .expect("a Converse answer");
    assert_eq!(
        output_content(&response),
        [serde_json::json!({"text": "hi"})]
    );
}
