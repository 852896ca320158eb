//! Amounts in Chinese capital numerals (大写金额) as financial documents write them, following
//! the rules of the People's Bank of China's payment settlement measures (《支付结算办法》):
//! `壹仟陆佰捌拾元叁角贰分`, `壹万零壹元整`, `壹元零伍分`.

const DIGITS: [char; 10] = ['零', '壹', '贰', '叁', '肆', '伍', '陆', '柒', '捌', '玖'];
const PLACES: [&str; 4] = ["仟", "佰", "拾", ""];
/// Group units from 元 upward: 元 (1), 万 (10^4), 亿 (10^8), 万亿 (10^12).
const GROUPS: [&str; 4] = ["", "万", "亿", "万亿"];

/// One group of up to four digits, without leading zeros; inner zeros collapse to one 零.
fn group_text(group: u64, out: &mut String) {
    let digits = [group / 1000, group / 100 % 10, group / 10 % 10, group % 10];
    let mut started = false;
    let mut pending_zero = false;
    for (digit, place) in digits.into_iter().zip(PLACES) {
        if digit == 0 {
            pending_zero |= started;
            continue;
        }
        if pending_zero {
            out.push('零');
            pending_zero = false;
        }
        out.push(DIGITS[digit as usize]);
        out.push_str(place);
        started = true;
    }
}

/// Whole yuan, e.g. 10001 → `壹万零壹`.
fn yuan_text(yuan: u64) -> String {
    let mut groups = Vec::new();
    let mut rest = yuan;
    while rest > 0 {
        groups.push(rest % 10_000);
        rest /= 10_000;
    }
    let mut out = String::new();
    let mut zero_between = false;
    for (index, &group) in groups.iter().enumerate().rev() {
        if group == 0 {
            zero_between |= !out.is_empty();
            continue;
        }
        // A gap of zeros between two groups reads as one 零.
        if !out.is_empty() && (zero_between || group < 1000) {
            out.push('零');
        }
        group_text(group, &mut out);
        out.push_str(GROUPS[index]);
        zero_between = false;
    }
    out
}

/// The capital-numeral form of an amount in fen (non-negative).
pub fn capital(fen: i64) -> String {
    let fen = fen.max(0) as u64;
    if fen == 0 {
        return "零元整".to_owned();
    }
    let (yuan, jiao, cents) = (fen / 100, fen / 10 % 10, fen % 10);
    let mut out = String::new();
    if yuan > 0 {
        out.push_str(&yuan_text(yuan));
        out.push('元');
    }
    if jiao == 0 && cents == 0 {
        out.push('整');
        return out;
    }
    if jiao > 0 {
        out.push(DIGITS[jiao as usize]);
        out.push('角');
    } else if yuan > 0 {
        // 元 followed directly by 分 must say 零.
        out.push('零');
    }
    if cents > 0 {
        out.push(DIGITS[cents as usize]);
        out.push('分');
    }
    out
}

/// Fen in figures: 168032 → `1,680.32`.
pub fn figures(fen: i64) -> String {
    let fen = fen.max(0);
    let yuan = (fen / 100).to_string();
    let mut grouped = String::new();
    for (index, ch) in yuan.chars().enumerate() {
        if index > 0 && (yuan.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{grouped}.{:02}", fen % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capital_numerals_follow_the_settlement_rules() {
        let cases = [
            (0, "零元整"),
            (1, "壹分"),
            (10, "壹角"),
            (55, "伍角伍分"),
            (100, "壹元整"),
            (105, "壹元零伍分"),
            (150, "壹元伍角"),
            (1_000, "壹拾元整"),
            (1_500, "壹拾伍元整"),
            (10_050, "壹佰元伍角"),
            (100_000, "壹仟元整"),
            (107_000, "壹仟零柒拾元整"),
            (100_100, "壹仟零壹元整"),
            (168_032, "壹仟陆佰捌拾元叁角贰分"),
            (1_000_100, "壹万零壹元整"),
            (1_010_000, "壹万零壹佰元整"),
            (10_000_000, "壹拾万元整"),
            (100_010_000, "壹佰万零壹佰元整"),
            (123_456_789, "壹佰贰拾叁万肆仟伍佰陆拾柒元捌角玖分"),
            (10_000_000_000, "壹亿元整"),
            (10_000_000_100, "壹亿零壹元整"),
            (10_001_000_000, "壹亿零壹万元整"),
            (1_000_000_000_000, "壹佰亿元整"),
            (10_000_000_000_000, "壹仟亿元整"),
            (20_050_000_300, "贰亿零伍拾万零叁元整"),
        ];
        for (fen, expected) in cases {
            assert_eq!(capital(fen), expected, "{fen} fen");
        }
    }

    #[test]
    fn figures_group_thousands() {
        assert_eq!(figures(5), "0.05");
        assert_eq!(figures(168_032), "1,680.32");
        assert_eq!(figures(123_456_789), "1,234,567.89");
        assert_eq!(figures(100_000), "1,000.00");
    }
}
