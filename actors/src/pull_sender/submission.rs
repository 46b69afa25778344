//! The input: a user message submitted for pulling (POST /api/as4/submit and the
//! edinode.as4.submit queue), as JSON.

use super::*;

/// A user message to be pulled, as JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The MPC to wait on; default: the ebMS default MPC.
    #[serde(default)]
    pub mpc: Option<String>,
    pub from: Party,
    pub to: Party,
    pub service: Service,
    pub action: String,
    /// Default: a new UUID.
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub agreement_ref: Option<String>,
    #[serde(default)]
    pub ref_to_message_id: Option<String>,
    /// eb:MessageProperties: `{"name": "value"}` (sent in name order) or `[{"name", "value"}]`.
    #[serde(default)]
    pub properties: Properties,
    /// Default: `<uuid>@edinode`.
    #[serde(default)]
    pub message_id: Option<String>,
    pub parts: Vec<SubmittedPart>,
}

/// One payload of a [`Submission`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmittedPart {
    /// Default: `part<n>.<hash of the message id>@edinode`.
    #[serde(default)]
    pub content_id: Option<String>,
    /// Default: application/octet-stream.
    #[serde(default)]
    pub mime_type: Option<String>,
    pub data_base64: String,
    #[serde(default)]
    pub properties: Properties,
}

/// Properties as a JSON object or as a list of `{"name", "value"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Properties {
    Map(BTreeMap<String, String>),
    List(Vec<Property>),
}

impl Default for Properties {
    fn default() -> Self {
        Properties::List(Vec::new())
    }
}

impl Properties {
    fn into_vec(self) -> Vec<Property> {
        match self {
            Properties::Map(m) => m.into_iter().map(|(name, value)| Property { name, value }).collect(),
            Properties::List(l) => l,
        }
    }
}

pub(super) fn check_message_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 255 || !id.chars().all(|c| c.is_ascii_graphic() && c != '<' && c != '>') {
        return Err(format!("message_id {id:?}: 1 to 255 printable ASCII characters without spaces or angle brackets"));
    }
    Ok(())
}

impl Submission {
    /// Read a submission (the JSON of `POST /api/as4/submit` and `edinode.as4.submit`); an error
    /// names the field at fault, e.g. `parts[0].data_base64: missing field` or
    /// `from.role: invalid type: integer `1`, expected a string`.
    pub fn from_json(body: &[u8]) -> Result<Submission, String> {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                // Where the document itself is broken (not JSON, or an unknown field at the top),
                // serde's message already says it; otherwise lead with the field.
                if path == "." { format!("not a submission: {inner}") } else { format!("not a submission: {path}: {inner}") }
            })
            .and_then(|s: Submission| de.end().map(|()| s).map_err(|e| format!("not a submission: {e}")))
    }

    /// The user message to queue, stamped `now_ms`.
    pub(crate) fn into_user_message(self, now_ms: i64) -> Result<UserMessage, String> {
        let message_id = self.message_id.unwrap_or_else(|| format!("{}@edinode", uuid::Uuid::new_v4()));
        check_message_id(&message_id)?;
        let tag = &short_hash(&message_id)[..12];
        let mut parts = Vec::with_capacity(self.parts.len());
        for (i, p) in self.parts.into_iter().enumerate() {
            let compact: String = p.data_base64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let bytes = openssl::base64::decode_block(&compact).map_err(|_| format!("parts[{i}].data_base64 is not base64"))?;
            parts.push(user_message::Part {
                content_id: p.content_id.unwrap_or_else(|| format!("part{}.{tag}@edinode", i + 1)),
                mime_type: p.mime_type.unwrap_or_else(|| "application/octet-stream".into()),
                bytes,
                properties: p.properties.into_vec(),
            });
        }
        Ok(UserMessage {
            message_id,
            timestamp: xsd_datetime(now_ms),
            ref_to_message_id: self.ref_to_message_id,
            mpc: self.mpc.map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).unwrap_or_else(|| DEFAULT_MPC.to_string()),
            from: self.from,
            to: self.to,
            service: self.service,
            action: self.action,
            conversation_id: self.conversation_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            agreement_ref: self.agreement_ref,
            properties: self.properties.into_vec(),
            parts,
        })
    }
}
