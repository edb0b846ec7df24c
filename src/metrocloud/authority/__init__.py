"""The authority's side: the nodes and tools of the notified body and market surveillance
(witnesses that cosign the logbook; later the approved identifications, the verification
monitor and the functionality checks)."""
