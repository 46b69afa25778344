//! AS4 interop with an independent XML-DSig stack: Python lxml (libxml2's exclusive C14N),
//! `cryptography` and python-xmlsec (libxmlsec1).
//!
//! - our signed pull response is verified by Python: RSA-SHA256 over lxml's canonical
//!   SignedInfo, each `#id` digest over lxml's canonical element, each `cid:` digest over the
//!   attachment (SwA 5.4.2: XML canonicalized by lxml, text with CRLF);
//! - PullRequests signed by libxmlsec1 (BinarySecurityToken reference, X509Data, an
//!   InclusiveNamespaces PrefixList, indented XML) verify here and name the right thumbprint.
//!
//! Python comes from `EDINODE_AS4_PYTHON`, or from the venv `tests/peers/setup.sh VENV as4` creates
//! (lxml, xmlsec, cryptography from PyPI).

use std::path::PathBuf;
use std::process::Command;

use edinode_proto::as4::signal;
use edinode_proto::as4::user_message::{Part, Party, Property, ResponseIds, Service, UserMessage, build_pull_response};
use edinode_proto::as4::wssec::{SecurityIds, SigningKey, thumbprint};
use edinode_proto::as4::{Limits, package};

fn key(cn: &str) -> SigningKey {
    let (key, cert) = edinode_proto::testing::self_signed(cn, 1).unwrap();
    SigningKey { key, cert }
}

const VERIFY_RESPONSE: &str = r#"
import sys, json, base64, hashlib
from lxml import etree
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
d = sys.argv[1]
NS = {'ds': 'http://www.w3.org/2000/09/xmldsig#',
      'wsse': 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd',
      'wsu': 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd',
      'eb': 'http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/'}
env = etree.fromstring(open(d + '/envelope.xml', 'rb').read())
atts = json.load(open(d + '/attachments.json'))
si = env.find('.//ds:SignedInfo', NS)
si_c14n = etree.tostring(si, method='c14n', exclusive=True, with_comments=False)
sig = base64.b64decode(env.find('.//ds:SignatureValue', NS).text)
bst = env.find('.//wsse:BinarySecurityToken', NS)
cert = x509.load_der_x509_certificate(base64.b64decode(bst.text))
cert.public_key().verify(sig, si_c14n, padding.PKCS1v15(), hashes.SHA256())
n = 0
for ref in si.findall('ds:Reference', NS):
    uri = ref.get('URI')
    want = ref.find('ds:DigestValue', NS).text
    if uri.startswith('#'):
        (el,) = env.xpath("//*[@wsu:Id=$id]", namespaces=NS, id=uri[1:])
        data = etree.tostring(el, method='c14n', exclusive=True, with_comments=False)
    else:
        a = atts[uri[4:]]
        data = base64.b64decode(a['bytes'])
        mime = a['type'].split(';')[0].strip().lower()
        if mime in ('text/xml', 'application/xml') or mime.endswith('+xml'):
            data = etree.tostring(etree.fromstring(data).getroottree(), method='c14n', exclusive=True, with_comments=False)
        elif mime.startswith('text/'):
            data = data.replace(b'\r\n', b'\n').replace(b'\r', b'\n').replace(b'\n', b'\r\n')
    got = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert got == want, (uri, got, want)
    n += 1
print('verified', n, 'references')
"#;

const SIGN_PULL_REQUESTS: &str = r#"
import sys, base64
from lxml import etree
import xmlsec
d = sys.argv[1]
S12 = 'http://www.w3.org/2003/05/soap-envelope'
WSSE = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd'
WSU = 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd'
EB = 'http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/'
DS = 'http://www.w3.org/2000/09/xmldsig#'
cert_der = open(d + '/client.der', 'rb').read()
def envelope(mpc):
    return f'''<S12:Envelope xmlns:S12="{S12}" xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}" xmlns:eb="{EB}">
  <S12:Header>
    <wsse:Security S12:mustUnderstand="true">
      <wsse:BinarySecurityToken EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary" ValueType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3" wsu:Id="X509-1">{base64.b64encode(cert_der).decode()}</wsse:BinarySecurityToken>
    </wsse:Security>
    <eb:Messaging S12:mustUnderstand="true" wsu:Id="msg-1">
      <eb:SignalMessage>
        <eb:MessageInfo>
          <eb:Timestamp>2024-05-01T12:00:00Z</eb:Timestamp>
          <eb:MessageId>pull-py-1@client</eb:MessageId>
        </eb:MessageInfo>
        <eb:PullRequest mpc="{mpc}"/>
      </eb:SignalMessage>
    </eb:Messaging>
  </S12:Header>
  <S12:Body wsu:Id="body-1"/>
</S12:Envelope>'''
def sign(variant):
    env = etree.fromstring(envelope('urn:mpc:py').encode())
    sec = env.find('.//{%s}Security' % WSSE)
    msg = env.find('.//{%s}Messaging' % EB)
    body = env.find('{%s}Body' % S12)
    sig = xmlsec.template.create(env, xmlsec.Transform.EXCL_C14N, xmlsec.Transform.RSA_SHA256, ns='ds')
    for uri in ('#msg-1', '#body-1'):
        ref = xmlsec.template.add_reference(sig, xmlsec.Transform.SHA256, uri=uri)
        t = xmlsec.template.add_transform(ref, xmlsec.Transform.EXCL_C14N)
        if variant == 'prefixlist':
            xmlsec.template.transform_add_c14n_inclusive_namespaces(t, ['S12', 'wsse'])
    ki = xmlsec.template.ensure_key_info(sig)
    if variant == 'x509data':
        xmlsec.template.add_x509_data(ki)
    else:
        st = etree.SubElement(ki, '{%s}SecurityTokenReference' % WSSE)
        r = etree.SubElement(st, '{%s}Reference' % WSSE)
        r.set('URI', '#X509-1')
        r.set('ValueType', 'http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3')
    sec.append(sig)
    ctx = xmlsec.SignatureContext()
    k = xmlsec.Key.from_file(d + '/client.key.pem', xmlsec.KeyFormat.PEM)
    if variant == 'x509data':
        k.load_cert_from_file(d + '/client.cert.pem', xmlsec.KeyFormat.PEM)
    ctx.key = k
    ctx.register_id(msg, 'Id', WSU)
    ctx.register_id(body, 'Id', WSU)
    ctx.sign(sig)
    open(d + '/pull_' + variant + '.xml', 'wb').write(etree.tostring(env))
for v in ('bst', 'x509data', 'prefixlist'):
    sign(v)
print('signed')
"#;

fn python() -> String {
    if let Some(p) = std::env::var("EDINODE_AS4_PYTHON").ok().filter(|p| !p.is_empty()) {
        return p;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("as4-venv");
    let st = Command::new("bash").arg(root.join("tests/peers/setup.sh")).arg(&venv).arg("as4").stdin(std::process::Stdio::null()).status().expect("setup.sh");
    assert!(st.success(), "tests/peers/setup.sh {} as4 failed", venv.display());
    venv.join("bin/python").display().to_string()
}

fn run(py: &str, script: &str, dir: &PathBuf) {
    let out = Command::new(py).arg("-c").arg(script).arg(dir).output().expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("python: {}", String::from_utf8_lossy(&out.stdout).trim());
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edinode-as4-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn as4_python_verifies_our_pull_response() {
    let py = python();
    let signer = key("edinode");
    let role = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultRole";
    let um = UserMessage {
        message_id: "um-1@edinode".into(),
        timestamp: "2024-05-01T12:00:00Z".into(),
        ref_to_message_id: None,
        mpc: "urn:mpc:orders".into(),
        from: Party { party_id: "a".into(), party_type: Some("urn:t".into()), role: role.into() },
        to: Party { party_id: "b".into(), party_type: None, role: role.into() },
        service: Service { value: "urn:s".into(), service_type: None },
        action: "Deliver".into(),
        conversation_id: "c & <1>".into(),
        agreement_ref: None,
        properties: vec![Property { name: "originalSender".into(), value: "x\"y'z\tw".into() }],
        parts: vec![
            Part {
                content_id: "doc@edinode".into(),
                mime_type: "application/xml".into(),
                bytes: b"<?xml version='1.0'?>\n<d:Doc xmlns:d='urn:d'  z='1' a='2'>\r\n <!-- c --> <d:x/>\n</d:Doc>".to_vec(),
                properties: vec![],
            },
            Part { content_id: "bin@edinode".into(), mime_type: "application/octet-stream".into(), bytes: vec![0, 1, 2, 255, 13, 10], properties: vec![] },
            Part { content_id: "txt@edinode".into(), mime_type: "text/plain; charset=utf-8".into(), bytes: b"a\nb\r\nc".to_vec(), properties: vec![] },
        ],
    };
    let ids = ResponseIds {
        boundary: "b1".into(),
        root_content_id: "root@edinode".into(),
        security: SecurityIds { messaging_id: "m-1".into(), body_id: "b-1".into(), bst_id: "t-1".into() },
    };
    let resp = build_pull_response(&um, &signer, &ids).unwrap();
    let received = package::split(&resp.content_type, &resp.body, &Limits::default()).unwrap();
    let dir = tempdir("resp");
    std::fs::write(dir.join("envelope.xml"), &received.envelope).unwrap();
    let atts: Vec<String> = received
        .attachments
        .iter()
        .map(|a| format!("\"{}\": {{\"type\": \"{}\", \"bytes\": \"{}\"}}", a.content_id, a.content_type, b64(&a.bytes)))
        .collect();
    std::fs::write(dir.join("attachments.json"), format!("{{{}}}", atts.join(","))).unwrap();
    run(&py, VERIFY_RESPONSE, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn as4_pull_requests_signed_by_libxmlsec_verify_here() {
    let py = python();
    let client = key("client");
    let dir = tempdir("pull");
    let der = client.cert.to_der().unwrap();
    std::fs::write(dir.join("client.der"), &der).unwrap();
    std::fs::write(dir.join("client.cert.pem"), client.cert.to_pem().unwrap()).unwrap();
    std::fs::write(dir.join("client.key.pem"), client.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    run(&py, SIGN_PULL_REQUESTS, &dir);
    for variant in ["bst", "x509data", "prefixlist"] {
        let bytes = std::fs::read(dir.join(format!("pull_{variant}.xml"))).unwrap();
        let inc = signal::parse("application/soap+xml", &bytes, &Limits::default())
            .unwrap_or_else(|e| panic!("{variant}: {e}"));
        assert_eq!(inc.pull.as_ref().unwrap().mpc, "urn:mpc:py", "{variant}");
        assert_eq!(inc.signed.as_ref().unwrap().thumbprint, thumbprint(&der), "{variant}");
        let tampered = String::from_utf8(bytes).unwrap().replacen("urn:mpc:py", "urn:mpc:px", 1);
        assert!(signal::parse("application/soap+xml", tampered.as_bytes(), &Limits::default()).is_err(), "{variant}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
