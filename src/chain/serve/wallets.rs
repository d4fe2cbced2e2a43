//! The standard wallet contracts `getWalletInformation` recognises: by the hash of their code,
//! against the codes tonlib-core ships (wallet v1 r1 to v5 r1), and their seqno and wallet id read
//! from their data in each version's layout. Other code (highload wallets included) is not
//! reported as a wallet.

use tonlib_core::TonHash;
use tonlib_core::wallet::version_helper::VersionHelper;
use tonlib_core::wallet::wallet_version::WalletVersion;
use tycho_types::models::StateInit;

/// What `getWalletInformation` says of a recognised wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WalletInfo {
    /// Toncenter's name for the version, e.g. `wallet v4 r2`.
    pub kind: &'static str,
    /// The seqno its next transfer must carry.
    pub seqno: u32,
    /// The wallet (subwallet) id, for versions that have one.
    pub wallet_id: Option<i64>,
}

/// How a version lays out the start of its data.
enum Layout {
    /// `seqno:uint32 public_key:bits256`.
    Seqno,
    /// `seqno:uint32 wallet_id:uint32 public_key:bits256 ...`.
    SeqnoId,
    /// `is_signature_allowed:bool seqno:uint32 wallet_id:int32 public_key:bits256 ...`.
    V5,
}

fn describe(version: WalletVersion) -> Option<(&'static str, Layout)> {
    Some(match version {
        WalletVersion::V1R1 => ("wallet v1 r1", Layout::Seqno),
        WalletVersion::V1R2 => ("wallet v1 r2", Layout::Seqno),
        WalletVersion::V1R3 => ("wallet v1 r3", Layout::Seqno),
        WalletVersion::V2R1 => ("wallet v2 r1", Layout::Seqno),
        WalletVersion::V2R2 => ("wallet v2 r2", Layout::Seqno),
        WalletVersion::V3R1 => ("wallet v3 r1", Layout::SeqnoId),
        WalletVersion::V3R2 => ("wallet v3 r2", Layout::SeqnoId),
        WalletVersion::V4R1 => ("wallet v4 r1", Layout::SeqnoId),
        WalletVersion::V4R2 => ("wallet v4 r2", Layout::SeqnoId),
        WalletVersion::V5R1 => ("wallet v5 r1", Layout::V5),
        _ => return None,
    })
}

/// The wallet whose code and data are `init`, if its code is a standard wallet's.
pub(super) fn recognise(init: &StateInit) -> Option<WalletInfo> {
    let code = init.code.as_ref()?;
    let version = *VersionHelper::get_version(&TonHash::from(code.repr_hash().0)).ok()?;
    let (kind, layout) = describe(version)?;
    let mut data = init.data.as_ref()?.as_slice().ok()?;
    if matches!(layout, Layout::V5) {
        data.skip_first(1, 0).ok()?;
    }
    let seqno = data.load_u32().ok()?;
    let wallet_id = match layout {
        Layout::Seqno => None,
        Layout::SeqnoId => Some(i64::from(data.load_u32().ok()?)),
        Layout::V5 => Some(i64::from(data.load_u32().ok()?.cast_signed())),
    };
    Some(WalletInfo { kind, seqno, wallet_id })
}
