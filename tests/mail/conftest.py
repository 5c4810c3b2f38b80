"""Reading mail as it comes: header decoding, addresses, dates, ids, previews and the rows stored for it."""
