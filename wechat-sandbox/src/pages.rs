//! The sandbox's HTML pages: the payer's authorization page and card package, and an index.

use crate::config::AccountConfig;
use crate::world::{AuthLink, CardBill, PayerMessage};

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Fen as yuan with two decimals: 12345 → "123.45".
pub fn yuan(fen: i64) -> String {
    format!("{}{}.{:02}", if fen < 0 { "-" } else { "" }, fen.abs() / 100, fen.abs() % 100)
}

fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title} · WeChat sandbox</title>
<style>
body {{ font-family: system-ui, "PingFang SC", "Noto Sans CJK SC", sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
.banner {{ background: #fff4ce; padding: .5rem .75rem; border-radius: .5rem; font-size: .85rem; }}
.card {{ border: 1px solid #ddd; border-radius: .75rem; padding: 1rem; margin: 1rem 0; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: .25rem 1rem; }} dt {{ color: #666; }}
button {{ font-size: 1rem; padding: .6rem 1.4rem; border-radius: .5rem; border: 0; margin-right: .5rem; cursor: pointer; }}
#authorize {{ background: #07c160; color: white; }} #decline {{ background: #eee; }}
.amount {{ font-size: 1.6rem; font-weight: 600; }}
.card.final {{ opacity: .6; }} .written-off {{ color: #c00; font-weight: 600; }}
</style></head>
<body><p class="banner">WeChat sandbox: a stand-in for WeChat, for development and tests only.</p>
<h1>{title}</h1>
{body}
</body></html>"#,
        title = escape(title)
    )
}

pub fn message(title: &str, text: &str) -> String {
    page(title, &format!("<p id=\"message\">{}</p>", escape(text)))
}

pub fn auth(link: &AuthLink, unit: &str, bureau: &str, openid: &str) -> String {
    let body = format!(
        r#"<div class="card">
<p>{unit} asks to send the fiscal e-bill (财政电子票据) of this payment to your WeChat card package.</p>
<p class="amount" id="amount">¥{amount}</p>
<dl>
<dt>Collection unit</dt><dd id="unit">{unit}</dd>
<dt>Issuing bureau</dt><dd id="bureau">{bureau}</dd>
<dt>Order</dt><dd id="order">{order}</dd>
<dt>Scenario</dt><dd>{source}</dd>
</dl>
</div>
<form method="post" action="/sandbox/auth/{id}">
<p><label>Your openid (the sandbox user) <input id="openid" name="openid" value="{openid}" size="32"></label></p>
<button id="authorize" name="action" value="authorize" type="submit">Authorize</button>
<button id="decline" name="action" value="decline" type="submit">Decline</button>
</form>"#,
        unit = escape(unit),
        bureau = escape(bureau),
        amount = yuan(link.money),
        order = escape(&link.order_id),
        source = if link.source == "app" { "App" } else { "Service Account" },
        id = escape(&link.id),
        openid = escape(openid),
    );
    page("Authorize e-bill insertion", &body)
}

pub fn answered(authorized: bool, openid: &str, redirect_url: Option<&str>) -> String {
    let mut body = if authorized {
        format!(
            "<p id=\"message\">Authorized. The collection unit has been notified; the bill will appear in <a id=\"card-package\" href=\"/sandbox/users/{0}\">your card package</a>.</p>",
            escape(openid)
        )
    } else {
        "<p id=\"message\">Declined. The collection unit has been notified.</p>".to_owned()
    };
    if let Some(url) = redirect_url {
        body.push_str(&format!("<p><a id=\"redirect\" href=\"{0}\">Back to the unit's page</a></p>", escape(url)));
    }
    page(if authorized { "Authorized" } else { "Declined" }, &body)
}

pub fn card_package(openid: &str, messages: &[PayerMessage], cards: &[(CardBill, String)]) -> String {
    let mut body = String::new();
    if !messages.is_empty() {
        body.push_str("<h2>Messages (服务通知)</h2><ul id=\"messages\">");
        for message in messages {
            let text = match &message.link {
                Some(link) => format!("<a href=\"{}\">{}</a>", escape(link), escape(&message.text)),
                None => escape(&message.text),
            };
            body.push_str(&format!(
                "<li class=\"message {kind}\"><b>{from}</b>: {text}</li>",
                kind = message.kind,
                from = escape(&message.from),
            ));
        }
        body.push_str("</ul>");
    }
    body.push_str(&format!("<p>Card package (卡包) of <code>{}</code>: {} bill(s).</p>", escape(openid), cards.len()));
    for (bill, payee) in cards {
        let written_off = if bill.status.is_final() {
            r#"<p class="written-off">已核销 · Written off (reversed, 冲红): no longer valid for reimbursement</p>"#
        } else {
            ""
        };
        body.push_str(&format!(
            r#"<div class="card{class}" id="card-{code}" data-code="{code}">
{written_off}<p class="amount">¥{amount}</p>
<dl>
<dt>Payee</dt><dd>{payee}</dd>
<dt>Payer</dt><dd>{title}</dd>
<dt>Bill code / number</dt><dd>{no} / {billing_code}</dd>
<dt>Order</dt><dd>{order}</dd>
<dt>Status</dt><dd class="status">{status}</dd>
</dl>
<p><a class="pdf-link" href="/sandbox/cards/{code}/pdf">View the bill (PDF)</a></p>
</div>"#,
            class = if bill.status.is_final() { " final" } else { "" },
            code = escape(&bill.code),
            amount = yuan(bill.fee),
            payee = escape(payee),
            title = escape(&bill.title),
            no = escape(&bill.billing_no),
            billing_code = escape(&bill.billing_code),
            order = escape(&bill.order_id),
            status = bill.status.as_str(),
        ));
    }
    page("Card package", &body)
}

pub fn index(accounts: &[AccountConfig], demo_openid: &str) -> String {
    let mut body = String::from("<h2>Accounts</h2><ul>");
    for account in accounts {
        body.push_str(&format!(
            "<li><code>{}</code> {} — pushes: {}</li>",
            escape(&account.appid),
            escape(&account.name),
            escape(account.callback_url.as_deref().unwrap_or("none"))
        ));
    }
    body.push_str(&format!(
        "</ul><p><a href=\"/sandbox/users/{0}\">Card package of the demo user</a> · <a href=\"/sandbox/stats\">call statistics</a> · <a href=\"/sandbox/pushes\">pushes</a></p>",
        escape(demo_openid)
    ));
    page("WeChat sandbox", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_yuan_and_escapes() {
        assert_eq!(yuan(12345), "123.45");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
