def roles(request) -> dict:
    """Expose the user's role to templates."""
    user = getattr(request, "user", None)
    role = user.role if user is not None and user.is_authenticated else None
    return {"user_role": role}
