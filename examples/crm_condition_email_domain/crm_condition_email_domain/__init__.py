"""email_domain: an automation condition on the domain of the contact's e-mail address."""
