"""Clients of the prompt service that segment more than one prompt: everything on a plane or a
stack (:mod:`.automatic`, :mod:`.automatic_volume`, :mod:`.proposals`, :mod:`.auto_params`),
and one object carried through a stack or a movie (:mod:`.propagation`, :mod:`.column`,
:mod:`.crossing`, :mod:`.tracking`)."""
