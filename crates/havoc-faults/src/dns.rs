//! `DNSChaos`: skeleton, being built (issue 14).

use crate::{Context, Fault, FaultError, Injection, Target, UndoAction};

pub struct DnsFault {
    spec: havoc_spec::dns::DNSChaos,
}

impl DnsFault {
    pub fn new(spec: havoc_spec::dns::DNSChaos) -> Self {
        DnsFault { spec }
    }
}

impl Fault for DnsFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        Err(FaultError::Refused {
            target: target.label(),
            reason: "DNSChaos is not implemented yet".into(),
        })
    }

    fn undo_plan(&self, _target: &Target) -> Vec<UndoAction> {
        Vec::new()
    }

    fn inject(&self, target: &Target, _ctx: &Context) -> Result<Box<dyn Injection>, FaultError> {
        self.check(target).map(|_| unreachable!())
    }

    fn requested(&self) -> String {
        self.spec.summary()
    }
}
