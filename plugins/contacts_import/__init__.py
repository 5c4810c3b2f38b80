"""contacts_import: "Create users" turns the people in a connected mailbox into CRM contacts."""
