//! JSON and MessagePack encodings of WebSocket frames: the same field names,
//! MessagePack as maps (never positional arrays).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ws::{SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Json,
    MsgPack,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("invalid JSON frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid MessagePack frame: {0}")]
    MsgPackDecode(#[from] rmp_serde::decode::Error),
    #[error("cannot encode MessagePack frame: {0}")]
    MsgPackEncode(#[from] rmp_serde::encode::Error),
}

impl Encoding {
    /// The encoding a WebSocket subprotocol names; JSON when none is asked for.
    pub fn from_subprotocol(name: Option<&str>) -> Option<Encoding> {
        match name {
            None | Some(SUBPROTOCOL_JSON) => Some(Encoding::Json),
            Some(SUBPROTOCOL_MSGPACK) => Some(Encoding::MsgPack),
            Some(_) => None,
        }
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => SUBPROTOCOL_JSON,
            Encoding::MsgPack => SUBPROTOCOL_MSGPACK,
        }
    }

    pub fn encode<T: Serialize>(self, frame: &T) -> Result<Vec<u8>, CodecError> {
        Ok(match self {
            Encoding::Json => serde_json::to_vec(frame)?,
            Encoding::MsgPack => rmp_serde::to_vec_named(frame)?,
        })
    }

    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, CodecError> {
        Ok(match self {
            Encoding::Json => serde_json::from_slice(bytes)?,
            Encoding::MsgPack => rmp_serde::from_slice(bytes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::ws::*;
    use serde_json::json;

    fn conversation() -> Conversation {
        Conversation {
            id: "cv_1".into(),
            contact: Contact { wa_id: "9198".into(), name: Some("Ravi".into()) },
            phone_number_id: "PN1".into(),
            status: ConversationStatus::Assigned,
            team: Some("sales".into()),
            agent: Some("asha".into()),
            source: Source::organic(),
            service_until: Some(1_795_600_800_000),
            free_entry_until: None,
            fields: Default::default(),
            opened_at: 1_795_514_400_000,
            closed_at: None,
            messages: Some(vec![Message {
                id: "wamid.A".into(),
                direction: Direction::In,
                kind: "text".into(),
                text: Some("hi".into()),
                media: None,
                at: 1_795_514_400_000,
                status: None,
                free: None,
                error: None,
                author: None,
            }]),
        }
    }

    fn frames() -> Vec<ServerFrame> {
        vec![
            ServerFrame::Assigned {
                seq: 7,
                conversation: Box::new(conversation()),
                route: Default::default(),
                handoff: None,
            },
            ServerFrame::Unassigned { seq: 8, conversation_id: "cv_1".into(), reason: UnassignReason::Closed },
            ServerFrame::ok(Some(json!(3)), json!({"message": {"id": "x"}}).as_object().unwrap().clone()),
            ServerFrame::error(
                Some(json!("a")),
                crate::ApiError::new(crate::ErrorCode::DispositionRequired, "set outcome first")
                    .with_detail(json!({"missing": ["outcome"]})),
            ),
        ]
    }

    #[test]
    fn both_encodings_round_trip_every_frame() {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            for frame in frames() {
                let bytes = encoding.encode(&frame).unwrap();
                let back: ServerFrame = encoding.decode(&bytes).unwrap();
                assert_eq!(back, frame, "{encoding:?}");
            }
        }
    }

    #[test]
    fn json_shape_is_flat_with_type() {
        let text = String::from_utf8(Encoding::Json.encode(&frames()[3]).unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "error");
        assert_eq!(value["code"], "disposition_required");
        assert_eq!(value["missing"], json!(["outcome"]));
        assert_eq!(value["detail"]["missing"], json!(["outcome"]));
        let assigned: serde_json::Value =
            serde_json::from_slice(&Encoding::Json.encode(&frames()[0]).unwrap()).unwrap();
        assert_eq!(assigned["conversation"]["opened_at"], "2026-11-24T10:00:00.000Z");
        assert_eq!(assigned["conversation"]["free_entry_until"], serde_json::Value::Null);
    }

    #[test]
    fn client_frames_decode_from_both_encodings() {
        let value = json!({"type": "send", "id": 1, "conversation_id": "cv_1", "text": "hello"});
        let from_json: ClientFrame = Encoding::Json.decode(&serde_json::to_vec(&value).unwrap()).unwrap();
        let from_msgpack: ClientFrame = Encoding::MsgPack.decode(&rmp_serde::to_vec_named(&value).unwrap()).unwrap();
        assert_eq!(from_json, from_msgpack);
        assert!(Encoding::Json.decode::<ClientFrame>(br#"{"type":"dance"}"#).is_err());
    }
}
