//! `HTTPChaos`: skeleton, being built (issue 14).

use crate::{Context, Fault, FaultError, Injection, Target, UndoAction};

pub struct HttpFault {
    spec: havoc_spec::http::HTTPChaos,
}

impl HttpFault {
    pub fn new(spec: havoc_spec::http::HTTPChaos) -> Self {
        HttpFault { spec }
    }
}

impl Fault for HttpFault {
    fn check(&self, target: &Target) -> Result<(), FaultError> {
        Err(FaultError::Refused {
            target: target.label(),
            reason: "HTTPChaos is not implemented yet".into(),
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
