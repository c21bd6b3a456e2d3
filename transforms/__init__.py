"""The job's Beam transforms (list and route files, deliver a family, the ledger, the watch), and beneath them the
plain parts they are made of, which import no Beam module: transforms.currents (Currents files, records, the
catalogs, track calls), transforms.segment (Segment's API, client, pacing, batching), and transforms.delivery,
transforms.senders and transforms.letters (one file's way to Segment, how requests go out, dead letters)."""
